"""Reports and digests to source units, end to end on an embedded warehouse: runs with
personal data in every column, the per-unit HTML / XLSX / GX Data Docs / supervision list,
then digests by email to a local SMTP server and by DingTalk-style webhook to a local HTTP
receiver (directly, and through the Airflow DingTalk provider), only when something changed.
Every report, log line, email (body and attachments) and webhook payload is scanned for
unmasked 18-character resident IDs and 11-digit mobiles."""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from stdnum.cn import ric

from catalog.models import Resource
from datarail.interval import Interval
from datarail.privacy import find_unmasked
from datarail.settings import load_settings
from quality.divisions import load_divisions
from quality.evidence import check_dicts, load_history, record_evidence
from quality.notify import NotifyError, send_digests
from quality.reports import write_unit_reports
from quality.tickets import escalate_overdue, update_tickets
from quality.validate import validate
from tests.helpers import tiny_catalog
from tests.servers import HookReceiver, SmtpSink
from warehouse.engine import get_engine
from warehouse.load import load_delivery
from warehouse.migrate import migrate

pytestmark = pytest.mark.integration

D1, D2 = Interval.daily(date(2026, 11, 21)), Interval.daily(date(2026, 12, 25))
DIVS = load_divisions()


def rid(first17: str) -> str:
    return first17 + ric.calc_check_digit(first17 + "0")


IDS = [rid(f"33010219900101{n:03d}") for n in (1, 3, 5, 7)]
MOBILES = ["13812345678", "13912345678", "15012345678", "18612345678"]
RES = Resource.model_validate({
    "code": "RK-T-0001", "table": "person", "name_zh": "人口", "name_en": "Person", "unit": "psb", "system": "huji",
    "location": {"table": "t_person"}, "primary_key": ["resident_id"], "update_cycle": "daily",
    "sharing": {"type": "conditional", "condition": "办事需要", "granted_to": ["zwfw"]},
    "fields": [{"name": "resident_id", "semantic": "resident_id", "required": True},
               {"name": "name", "semantic": "person_name", "required": True},
               {"name": "gender", "semantic": "gender", "values": ["男", "女"]},
               {"name": "phone", "semantic": "phone"},
               {"name": "remark"}]})
CAT = tiny_catalog(RES)


def rows(bad_gender: int, bad_phone: bool = True) -> list[dict]:
    out = []
    for i, (p, m) in enumerate(zip(IDS, MOBILES, strict=True)):
        out.append({"resident_id": p, "name": "欧阳娜娜", "gender": "女" if i < bad_gender else "男",
                    "phone": "1381234567" if bad_phone and i == 3 else m,
                    "remark": f"联系人 {m}，身份证 {p}"})  # personal data in free text too
    return out


def run_interval(engine, interval: Interval, data: list[dict]) -> None:
    raw = pd.DataFrame(data).astype("str")
    raw.insert(0, "_row", pd.Series(range(1, len(data) + 1), dtype="int64"))
    outcome = validate(RES, raw, run_date=interval.run_date, divisions=DIVS, history=load_history(engine, RES, interval))
    checks = check_dicts(outcome.checks)
    load_delivery(engine, RES, interval=interval, run_id="t", passed=outcome.passed, quarantined=outcome.quarantined,
                  checks=checks, extracted=outcome.evaluated, extract_summary={"bytes": 1},
                  latest_update=outcome.latest_update)
    record_evidence(engine, RES, interval, checks, outcome.failures)
    update_tickets(engine, CAT, RES.code, interval)
    folder = Path(engine.url.database).parent.parent / "gx" / interval.key  # beside the warehouse
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gx_result.json").write_text(json.dumps(outcome.gx_result, default=str), encoding="utf-8")


@pytest.fixture
def engine(tmp_path):
    eng = get_engine(load_settings({"DATARAIL_HOME": str(tmp_path / "home")}))
    migrate(eng)
    with eng.begin() as c:  # the catalog snapshot the reports join (resource names)
        c.execute(sa.text("INSERT INTO meta.catalog_resources (code, table_name, name_zh, name_en, unit, system_kind, "
                          "sharing_type, sharing_condition, base_library, update_cycle, cycle_days, status) VALUES "
                          "('RK-T-0001', 'person', '人口', 'Person', 'psb', 'sql', 'conditional', 'x', 'none', "
                          "'daily', 1, 'active')"))
    return eng


def reports(engine, tmp_path, interval: Interval) -> dict:
    day = interval.run_date
    escalate_overdue(engine, day)
    gx = tmp_path / "home" / "gx" / interval.key / "gx_result.json"
    return write_unit_reports(engine, CAT, day.isoformat(), tmp_path / "reports" / day.isoformat(),
                              gx_results={RES.code: gx})


def leaks_in_email(msg) -> list[str]:
    found = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_content_type().endswith("spreadsheetml.sheet"):
            with zipfile.ZipFile(io.BytesIO(payload)) as z:
                text = " ".join(z.read(n).decode("utf-8", "replace") for n in z.namelist() if n.endswith(".xml"))
        else:
            text = payload.decode(part.get_content_charset() or "utf-8", "replace")
        found += find_unmasked(text)
    return found + find_unmasked(str(msg["Subject"]))


def test_reports_and_digests_reach_units_masked_and_only_on_change(engine, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run_interval(engine, D1, rows(bad_gender=2))
    paths = reports(engine, tmp_path, D1)
    out = paths["index"].parent
    html = paths["psb"].read_text(encoding="utf-8")
    assert "id_gender:resident_id" in html and "phone:phone" in html and "<svg" in html
    assert 'href="quality_psb.xlsx"' in html and "data_docs/psb/index.html" in html
    # the XLSX lists every failing key, masked, with its delivery row
    from openpyxl import load_workbook
    wb = load_workbook(paths["psb.xlsx"])
    keys = list(wb["不合格主键 Failing keys"].iter_rows(min_row=2, values_only=True))
    assert sorted((r[2], r[4]) for r in keys) == [("id_gender:resident_id", 1), ("id_gender:resident_id", 2),
                                                 ("phone:phone", 4)]
    assert all(re.fullmatch(r"330102\*{8}\w{4}", r[5]) for r in keys)
    # GX Data Docs built beside the reports
    docs = out / "data_docs" / "psb"
    assert (docs / "index.html").exists() and list((docs / "validations").rglob("*.html"))

    with SmtpSink() as smtp, HookReceiver() as hook:
        email_conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port, "login": None, "password": None,
                      "extra": {"from_email": "dq@datacentre.example.gov.cn", "disable_ssl": True, "disable_tls": True}}
        webhook_conn = {"conn_type": "dingding", "host": hook.url, "password": "robot-token", "extra": {}}
        sent = send_digests(engine, CAT, "2026-11-21", out, email_conn=email_conn, webhook_conn=webhook_conn)
        assert sent["units"]["psb"]["channels"] == ["outbox", "email", "webhook"]
        [mail] = smtp.parsed()
        assert mail["To"] == "psb@example.gov.cn" and "数据质量问题反馈" in mail["Subject"]
        assert {p.get_filename() for p in mail.iter_attachments()} == {"quality_psb.html", "quality_psb.xlsx"}
        body = mail.get_body(("plain",)).get_content()
        assert "新增问题 opened" in body and "id_gender:resident_id" in body
        [req] = hook.requests
        assert req["path"] == "/robot/send" and req["query"]["access_token"] == ["robot-token"]
        assert req["json"]["msgtype"] == "markdown" and "id_gender:resident_id" in req["json"]["markdown"]["text"]
        texts = {"email": leaks_in_email(mail), "webhook": find_unmasked(req["body"])}

        # the same run date again: nothing changed, nothing sent
        again = send_digests(engine, CAT, "2026-11-21", out, email_conn=email_conn, webhook_conn=webhook_conn)
        assert again["units"]["psb"] == {"channels": [], "changes": 0, "unchanged": True}
        assert len(smtp.messages) == 1 and len(hook.requests) == 1

        # D2: the gender fixed (struck off), the phone ticket overdue -> escalated; one digest each
        run_interval(engine, D2, rows(bad_gender=0))
        paths = reports(engine, tmp_path, D2)
        out2 = paths["index"].parent
        assert "DQ-" in (out2 / "supervision.html").read_text(encoding="utf-8")
        send_digests(engine, CAT, "2026-12-25", out2, email_conn=email_conn, webhook_conn=webhook_conn)
        assert len(smtp.messages) == 2 and len(hook.requests) == 2
        second = smtp.parsed()[1].get_body(("plain",)).get_content()
        assert "已销号 struck off" in second
        # a backfill of the earlier run date notifies nobody: they already heard of a later state
        assert send_digests(engine, CAT, "2026-11-21", out, email_conn=email_conn,
                            webhook_conn=webhook_conn)["units"]["psb"]["channels"] == []
        assert len(smtp.messages) == 2
        texts["email2"] = leaks_in_email(smtp.parsed()[1])
        texts["webhook2"] = find_unmasked(hook.requests[1]["body"])

    # nothing personal anywhere: reports, XLSX, Data Docs, outbox, emails, webhooks, logs
    for path in (tmp_path / "reports").rglob("*"):
        if path.suffix in (".html", ".json", ".eml"):
            texts[str(path)] = find_unmasked(path.read_text(encoding="utf-8", errors="replace"))
        elif path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as z:
                texts[str(path)] = find_unmasked(" ".join(z.read(n).decode("utf-8", "replace") for n in z.namelist()))
    texts["log"] = find_unmasked(caplog.text)
    assert {k: v for k, v in texts.items() if v} == {}
    assert len([p for p in (tmp_path / "reports").rglob("*") if p.suffix == ".html"]) > 5


def test_a_failing_channel_is_recorded_and_the_others_still_deliver(engine, tmp_path):
    run_interval(engine, D1, rows(bad_gender=1))
    out = reports(engine, tmp_path, D1)["index"].parent
    with HookReceiver() as hook:
        dead = {"host": "127.0.0.1", "port": 1, "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 2}}
        with pytest.raises(NotifyError, match="psb/email"):
            send_digests(engine, CAT, "2026-11-21", out, email_conn=dead,
                         webhook_conn={"host": hook.url, "password": "t", "extra": {}})
        assert len(hook.requests) == 1
    with engine.connect() as c:
        status = dict(c.execute(sa.text("SELECT channel, status FROM quality.notifications")).all())
    assert status == {"outbox": "sent", "email": "failed", "webhook": "sent"}


def test_webhook_refusal_is_an_error(engine, tmp_path):
    run_interval(engine, D1, rows(bad_gender=1))
    out = reports(engine, tmp_path, D1)["index"].parent
    with HookReceiver(status=200) as hook:
        hook.server.status = 500
        with pytest.raises(NotifyError, match="webhook"):
            send_digests(engine, CAT, "2026-11-21", out, webhook_conn={"host": hook.url, "password": "t"})


def test_webhook_through_the_airflow_dingtalk_provider(engine, tmp_path, monkeypatch):
    DingdingHook = pytest.importorskip("airflow.providers.dingding.hooks.dingding").DingdingHook
    run_interval(engine, D1, rows(bad_gender=1))
    out = reports(engine, tmp_path, D1)["index"].parent
    with HookReceiver() as hook:
        monkeypatch.setenv("AIRFLOW_CONN_DATARAIL_DINGTALK", json.dumps(
            {"conn_type": "dingding", "host": hook.url, "password": "provider-token"}))

        def send(message: dict) -> None:  # what dags/_factory.py passes as webhook_send
            DingdingHook(dingding_conn_id="datarail_dingtalk", message_type="markdown", message=message).send()

        sent = send_digests(engine, CAT, "2026-11-21", out, webhook_conn={"host": hook.url}, webhook_send=send)
        assert sent["units"]["psb"]["channels"] == ["outbox", "webhook"]
        [req] = hook.requests
    assert req["query"]["access_token"] == ["provider-token"]
    assert req["json"]["msgtype"] == "markdown" and "DQ-" in req["json"]["markdown"]["text"]
    assert find_unmasked(req["body"]) == []
