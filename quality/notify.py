"""Digests to source units: email over SMTP and a DingTalk-style webhook (政务钉钉 robots).

A unit gets a digest only when something changed for it since its last digest on that
channel: a ticket opened, resolved (销号), reopened, changed state or failing count,
escalated onto the supervision list, or a dispute decided. The unit's ticket state is kept
with every digest (``quality.notifications``: fingerprint + state), so the change is the
difference between two states, and rerunning a run date sends nothing new.

Channels (Airflow connections; the DAG reads them, this module never imports Airflow):

- ``datarail_smtp``: SMTP, with the SMTP provider's conventions: ``host``, ``port``,
  ``login``/``password`` (optional), ``extra`` ``from_email``, ``disable_ssl`` (default
  false: SMTPS), ``disable_tls`` (default false: STARTTLS), ``timeout``. The email carries
  the unit's HTML report and XLSX of failing keys as attachments.
- ``datarail_dingtalk``: a DingTalk custom robot: ``host`` (default
  ``https://oapi.dingtalk.com``), ``password`` = the access token, ``extra.secret`` for
  signed robots. The DAG posts through the Airflow DingTalk provider when it is installed
  (``webhook_send``); :func:`post_dingtalk` is the same request without Airflow.

Every digest is also written to ``reports/<date>/outbox/`` (``<unit>.eml``,
``<unit>.dingtalk.json``), the audit copy and the only channel when none is configured.
Nothing personal is in a digest: ticket ids, check ids, counts, masked text; every text
passes :func:`datarail.privacy.scrub_text` before it leaves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import smtplib
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from catalog.models import Catalog, Unit
from datarail.errors import DatarailError
from datarail.privacy import scrub_text
from quality.tickets import LIVE_STATES
from warehouse.sqlfiles import query_file

log = logging.getLogger(__name__)

SMTP_CONN_ID = "datarail_smtp"
WEBHOOK_CONN_ID = "datarail_dingtalk"
DINGTALK_DEFAULT_HOST = "https://oapi.dingtalk.com"
CHANNELS = ("email", "webhook", "outbox")
STATE_ZH = {"new": "新建", "acknowledged": "已确认", "rectifying": "整改中", "disputed": "有异议",
            "reopened": "重新打开", "resolved": "已销号"}


class NotifyError(DatarailError):
    """A digest could not be delivered (SMTP or webhook refused it)."""


# --- what changed -------------------------------------------------------------------------------

def unit_state(engine: sa.Engine, unit: str) -> dict[str, dict]:
    """The unit's tickets as they matter to a digest: {ticket id: {resource, check, severity,
    state, failed, evaluated, due, escalated, dispute}} (resolved tickets included: their
    resolution is news once)."""
    with engine.connect() as conn:
        rows = query_file(conn, "quality/unit_tickets", {"unit": unit})
    return {r["ticket_id"]: {"resource": r["resource"], "check_id": r["check_id"], "severity": r["severity"],
                             "state": r["state"], "failed": int(r["failed"]), "evaluated": int(r["evaluated"]),
                             "due_date": r["due_date"], "escalated_on": r["escalated_on"],
                             "dispute_status": r["dispute_status"]} for r in rows}


def fingerprint(state: dict) -> str:
    """A stable hash of a unit's ticket state."""
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def changes(before: dict[str, dict], after: dict[str, dict]) -> list[dict]:
    """What changed between two states of a unit's tickets, one entry per ticket."""
    out = []
    for tid, t in sorted(after.items()):
        old = before.get(tid)
        if old is None:
            if t["state"] != "resolved":
                out.append({"ticket_id": tid, "change": "opened", **t})
            continue
        if old["state"] != t["state"]:
            kind = {"resolved": "resolved", "reopened": "reopened"}.get(t["state"], "state")
            out.append({"ticket_id": tid, "change": kind, "from": old["state"], **t})
        elif old["failed"] != t["failed"]:
            out.append({"ticket_id": tid, "change": "failed", "from_failed": old["failed"], **t})
        if t["escalated_on"] and not old.get("escalated_on"):
            out.append({"ticket_id": tid, "change": "escalated", **t})
        if t["dispute_status"] != old.get("dispute_status") and t["dispute_status"] in ("accepted", "rejected"):
            out.append({"ticket_id": tid, "change": f"dispute_{t['dispute_status']}", **t})
    return out


def _last_state(engine: sa.Engine, unit: str, channel: str, run_date: str) -> tuple[str | None, dict]:
    """Fingerprint and state of the unit's latest delivered digest on ``channel`` up to
    ``run_date`` (an empty state when it never got one)."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT fingerprint, state FROM quality.notifications WHERE unit = :u AND channel = :c "
            "AND status = 'sent' AND run_date <= :d ORDER BY run_date DESC LIMIT 1"),
            {"u": unit, "c": channel, "d": run_date}).first()
    return (row[0], json.loads(row[1])) if row else (None, {})


def _newer_digest(engine: sa.Engine, unit: str, channel: str, run_date: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT 1 FROM quality.notifications WHERE unit = :u AND channel = :c AND status = 'sent' "
            "AND run_date > :d"), {"u": unit, "c": channel, "d": run_date}).first() is not None


# --- composing ---------------------------------------------------------------------------------

_CHANGE_TEXT = {
    "opened": ("新增问题", "opened"), "resolved": ("已销号", "struck off"), "reopened": ("重新打开", "reopened"),
    "state": ("状态变更", "state changed"), "failed": ("不合格数变化", "failing rows changed"),
    "escalated": ("挂牌督办", "put under supervision"), "dispute_accepted": ("异议已采纳", "dispute accepted"),
    "dispute_rejected": ("异议已驳回", "dispute rejected"),
}


def _change_line(c: dict) -> str:
    zh, en = _CHANGE_TEXT[c["change"]]
    detail = f"{c['failed']}/{c['evaluated']}"
    if c["change"] == "failed":
        detail = f"{c['from_failed']} → {c['failed']}/{c['evaluated']}"
    if c["change"] == "state":
        detail = f"{STATE_ZH.get(c['from'], c['from'])} → {STATE_ZH.get(c['state'], c['state'])}"
    return f"{zh} {en}: {c['ticket_id']} {c['resource']} {c['check_id']} ({detail})"


def compose(unit: Unit, run_date: str, state: dict[str, dict], delta: list[dict]) -> dict:
    """The digest: subject, plain text, markdown (webhook) and HTML (email) bodies; masked."""
    live = [t for t in state.values() if t["state"] in LIVE_STATES]
    counts = {"open": len(live), "blocking": sum(t["severity"] == "blocking" for t in live),
              "overdue": sum(bool(t["due_date"]) and t["due_date"] < run_date for t in live),
              "supervised": sum(bool(t["escalated_on"]) for t in live)}
    subject = (f"[datarail] 数据质量问题反馈 {unit.name_zh} {run_date}: 未销号 {counts['open']} 项"
               f"（超期 {counts['overdue']}，督办 {counts['supervised']}）")
    lines = [f"{unit.name_zh}（{unit.code}）数据质量问题反馈 Data quality digest, run date {run_date}",
             f"未销号工单 open {counts['open']} · 阻断 blocking {counts['blocking']} · 超期 overdue "
             f"{counts['overdue']} · 挂牌督办 supervised {counts['supervised']}", "",
             "本次变化 What changed:"] + [f"- {_change_line(c)}" for c in delta] + [
             "", f"详见附件报告 quality_{unit.code}.html 与不合格主键清单 quality_{unit.code}.xlsx。",
             "See the attached report and XLSX of failing keys. A ticket is struck off when a later run passes."]
    text = scrub_text("\n".join(lines))
    markdown = scrub_text("\n\n".join([f"### {unit.name_zh} 数据质量问题反馈 {run_date}", lines[1],
                                       "**本次变化 What changed**"] + [f"- {_change_line(c)}" for c in delta]))
    from markupsafe import escape

    html = ("<html><body><h3>" + escape(lines[0]) + "</h3><p>" + escape(lines[1]) + "</p><ul>"
            + "".join(f"<li>{escape(_change_line(c))}</li>" for c in delta)
            + "</ul><p>" + escape(lines[-2]) + "<br>" + escape(lines[-1]) + "</p></body></html>")
    return {"subject": scrub_text(subject), "text": text, "markdown": markdown, "html": scrub_text(str(html)),
            "counts": counts, "changes": len(delta)}


def build_email(unit: Unit, digest: dict, sender: str, attachments: list[Path]) -> EmailMessage:
    """The MIME message: text and HTML alternatives, report attachments."""
    msg = EmailMessage()
    msg["Subject"] = digest["subject"]
    msg["From"] = sender
    msg["To"] = unit.contact_email
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="datarail.local")
    msg.set_content(digest["text"])
    msg.add_alternative(digest["html"], subtype="html")
    for path in attachments:
        if not path.exists():
            continue
        if path.suffix == ".html":
            msg.add_attachment(path.read_bytes(), maintype="text", subtype="html", filename=path.name)
        else:
            msg.add_attachment(path.read_bytes(), maintype="application",
                               subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet", filename=path.name)
    return msg


# --- channels ----------------------------------------------------------------------------------

def send_email(conn: dict, msg: EmailMessage) -> None:
    """Send over SMTP with an Airflow SMTP connection's fields (see the module docstring)."""
    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra or "{}")
    host, port = conn.get("host") or "localhost", int(conn.get("port") or 0)
    timeout = float(extra.get("timeout", 30))
    ssl_off = str(extra.get("disable_ssl", False)).lower() in ("true", "1", "yes")
    tls_off = str(extra.get("disable_tls", False)).lower() in ("true", "1", "yes")
    try:
        if not ssl_off:
            client: smtplib.SMTP = smtplib.SMTP_SSL(host, port or 465, timeout=timeout)
        else:
            client = smtplib.SMTP(host, port or 25, timeout=timeout)
        with client:
            client.ehlo()
            if ssl_off and not tls_off:
                client.starttls()
                client.ehlo()
            if conn.get("login"):
                client.login(conn["login"], conn.get("password") or "")
            client.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise NotifyError(f"SMTP delivery to {host}:{port} failed: {scrub_text(str(exc))}",
                          hint=f"check the Airflow connection {SMTP_CONN_ID}") from exc


def dingtalk_message(digest: dict) -> dict:
    """The DingTalk custom-robot payload (markdown), as the Airflow provider builds it."""
    return {"msgtype": "markdown", "markdown": {"title": digest["subject"][:64], "text": digest["markdown"]},
            "at": {"atMobiles": None, "isAtAll": False}}


def post_dingtalk(conn: dict, payload: dict) -> None:
    """POST a message to a DingTalk custom robot (``host`` + ``/robot/send``, access token in
    ``password``, optional ``extra.secret`` for signed robots); errcode 0 is success."""
    import requests

    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra or "{}")
    host = (conn.get("host") or DINGTALK_DEFAULT_HOST).rstrip("/")
    if conn.get("port") and host.count(":") < 2:
        host = f"{host}:{conn['port']}"
    if "://" not in host:
        host = f"{conn.get('schema') or 'https'}://{host}"
    params = {"access_token": conn.get("password") or ""}
    if extra.get("secret"):
        ts = str(round(time.time() * 1000))
        digest = hmac.new(extra["secret"].encode(), f"{ts}\n{extra['secret']}".encode(), hashlib.sha256).digest()
        params.update(timestamp=ts, sign=base64.b64encode(digest).decode())
    url = f"{host}/robot/send?{urllib.parse.urlencode(params)}"
    try:
        resp = requests.post(url, json=payload, timeout=float(extra.get("timeout", 15)))
        body = resp.json() if resp.content else {}
    except (requests.RequestException, ValueError) as exc:
        raise NotifyError(f"webhook delivery failed: {scrub_text(str(exc))}",
                          hint=f"check the Airflow connection {WEBHOOK_CONN_ID}") from exc
    if resp.status_code != 200 or int(body.get("errcode", -1)) != 0:
        raise NotifyError(f"webhook refused the digest: HTTP {resp.status_code} {scrub_text(str(body))[:200]}",
                          hint=f"check the token of {WEBHOOK_CONN_ID}")


# --- sending -----------------------------------------------------------------------------------

def _record(engine: sa.Engine, unit: str, run_date: str, channel: str, fp: str, state: dict, status: str,
            recipient: str | None, detail: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM quality.notifications WHERE unit = :u AND run_date = :d AND channel = :c"),
                     {"u": unit, "d": run_date, "c": channel})
        conn.execute(sa.text(
            "INSERT INTO quality.notifications (unit, run_date, channel, fingerprint, state, status, recipient, detail, "
            "sent_at) VALUES (:u, :d, :c, :fp, :s, :st, :r, :x, :t)"),
            {"u": unit, "d": run_date, "c": channel, "fp": fp, "s": json.dumps(state, sort_keys=True, default=str),
             "st": status, "r": recipient, "x": scrub_text(detail) if detail else None,
             "t": datetime.now(UTC).replace(tzinfo=None)})


def send_digests(engine: sa.Engine, catalog: Catalog, run_date: str, reports_dir: Path, *,
                 email_conn: dict | None = None, webhook_conn: dict | None = None,
                 webhook_send: Callable[[dict], Any] | None = None) -> dict:
    """Send a digest to every source unit whose tickets changed since its last digest, on
    each configured channel, plus the outbox copy. Returns per unit the channels used (or
    ``unchanged``) and the number of changes. A failing channel is recorded and raised after
    the others were tried, so one bad SMTP server does not silence the webhook."""
    reports_dir = Path(reports_dir)
    outbox = reports_dir / "outbox"
    channels = ["outbox"] + (["email"] if email_conn else []) + (["webhook"] if webhook_conn or webhook_send else [])
    extra = (email_conn or {}).get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra or "{}")
    sender = extra.get("from_email") or (email_conn or {}).get("login") or "datarail@localhost"
    result: dict[str, dict] = {}
    errors: list[str] = []
    for unit in catalog.source_units:
        state = unit_state(engine, unit.code)
        fp = fingerprint(state)
        sent: list[str] = []
        delta_n = 0
        for channel in channels:
            if _newer_digest(engine, unit.code, channel, run_date):
                continue  # a backfilled run date: the unit already heard of a later state
            last_fp, last_state = _last_state(engine, unit.code, channel, run_date)
            if last_fp == fp:
                continue
            delta = changes(last_state, state)
            if not delta:
                continue  # e.g. only resolved tickets it already heard of
            digest = compose(unit, run_date, state, delta)
            delta_n = max(delta_n, len(delta))
            attachments = [reports_dir / f"quality_{unit.code}.html", reports_dir / f"quality_{unit.code}.xlsx"]
            try:
                if channel == "outbox":
                    outbox.mkdir(parents=True, exist_ok=True)
                    msg = build_email(unit, digest, sender, attachments)
                    (outbox / f"{unit.code}.eml").write_bytes(bytes(msg))
                    (outbox / f"{unit.code}.dingtalk.json").write_text(
                        json.dumps(dingtalk_message(digest), ensure_ascii=False, indent=1), encoding="utf-8")
                    recipient = str(outbox)
                elif channel == "email":
                    send_email(email_conn, build_email(unit, digest, sender, attachments))
                    recipient = unit.contact_email
                else:
                    payload = dingtalk_message(digest)
                    if webhook_send is not None:
                        webhook_send(payload["markdown"])
                    else:
                        post_dingtalk(webhook_conn, payload)
                    recipient = WEBHOOK_CONN_ID
                _record(engine, unit.code, run_date, channel, fp, state, "sent", recipient, None)
                sent.append(channel)
            except Exception as exc:  # noqa: BLE001 - recorded, logged and re-raised below
                _record(engine, unit.code, run_date, channel, fp, state, "failed", None, str(exc))
                errors.append(f"{unit.code}/{channel}: {scrub_text(str(exc))}")
                log.error("digest to %s over %s failed: %s", unit.code, channel, scrub_text(str(exc)))
        result[unit.code] = {"channels": sent, "changes": delta_n} if sent else {"channels": [], "changes": 0,
                                                                                 "unchanged": True}
        if sent:
            log.info("digest to %s (%d changes) over %s", unit.code, delta_n, ", ".join(sent))
    if errors:
        raise NotifyError(f"{len(errors)} digest(s) not delivered: {'; '.join(errors)[:1000]}")
    return {"run_date": run_date, "units": result}
