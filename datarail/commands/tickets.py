"""``datarail tickets ...``: feedback tickets to source units (数据质量问题反馈).

Read: ``list``, ``show``, ``supervision`` (``--json`` on each). Source units: ``ack``,
``rectify``, ``dispute``, ``comment``. Data centre: ``accept-dispute``, ``reject-dispute``.
Nobody resolves a ticket by hand: a later run whose check passes does (销号).
Every change records who (``--by``, default ``$DATARAIL_ACTOR`` or ``$USER``), when, the
states before and after, and the comment.
"""

from __future__ import annotations

import os
from datetime import date

import click

from datarail.cli import _echo_json
from datarail.errors import DatarailError
from datarail.settings import load_settings


def _engine():
    from warehouse.engine import get_engine

    return get_engine(load_settings())


def _default_actor() -> str:
    return os.environ.get("DATARAIL_ACTOR") or os.environ.get("USER") or ""


BY = click.option("--by", "actor", default=_default_actor, show_default="$DATARAIL_ACTOR or $USER",
                  help="who makes the change (recorded)")


def _act(fn, *args) -> dict:
    try:
        return fn(_engine(), *args)
    except DatarailError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def tickets() -> None:
    """Feedback tickets to source units."""


@tickets.command("list")
@click.option("--unit", help="source unit code")
@click.option("--state", type=click.Choice(["new", "acknowledged", "rectifying", "disputed", "reopened", "resolved"]))
@click.option("--live", is_flag=True, help="only tickets not yet struck off")
@click.option("--overdue", "overdue_on", type=click.DateTime(["%Y-%m-%d"]), help="only tickets overdue on this date")
@click.option("--supervised", is_flag=True, help="only tickets on the supervision list")
@click.option("--json", "as_json", is_flag=True)
def tickets_list(unit: str | None, state: str | None, live: bool, overdue_on, supervised: bool, as_json: bool) -> None:
    """List tickets (samples masked; failing keys stay in the warehouse)."""
    from quality.tickets import list_tickets

    rows = list_tickets(_engine(), unit=unit, state=state, live_only=live, supervised=supervised,
                        overdue_on=overdue_on.date() if overdue_on else None)
    if as_json:
        return _echo_json(rows)
    if not rows:
        click.echo("no tickets")
    today = date.today().isoformat()
    for t in rows:
        flags = "".join([" [supervised]" if t["escalated_on"] else "",
                         " [overdue]" if t["state"] != "resolved" and t["due_date"] < today else "",
                         f" [dispute {t['dispute_status']}]" if t["dispute_status"] else ""])
        click.echo(f"{t['ticket_id']}  {t['state']:<12} {t['unit']:<5} {t['resource']:<12} {t['check_id']:<32} "
                   f"{t['failed']}/{t['evaluated']}  due {t['due_date']}{flags}")


@tickets.command("show")
@click.argument("ticket_id")
@click.option("--json", "as_json", is_flag=True)
def tickets_show(ticket_id: str, as_json: bool) -> None:
    """One ticket: rule, evidence, history, supervision, and the query reproducing its rows."""
    from quality.tickets import get_ticket

    t = _act(get_ticket, ticket_id)
    if as_json:
        return _echo_json(t)
    click.echo(f"{t['ticket_id']}  {t['resource']} {t['check_id']}  [{t['severity']}]  state {t['state']}")
    click.echo(f"unit {t['unit']} (assignee {t.get('assignee') or '-'})  due {t['due_date']}"
               + (f"  supervised since {t['escalated_on']}" if t["escalated_on"] else ""))
    click.echo(f"failing {t['failed']} of {t['evaluated']}  opened {t['opened_interval']}  last {t['last_interval']}")
    if t["dispute_reason"]:
        click.echo(f"dispute: {t['dispute_reason']} ({t['dispute_status']}): {t['dispute_comment']}")
    click.echo(f"rule: {t['rule']}")
    for s in t["sample"]:
        click.echo(f"  sample: {s}")
    click.echo("history:")
    for e in t["events"]:
        click.echo(f"  {e['seq']:>3} {e['at'][:19]}  {e['actor']:<16} {e['action'] or '':<15} "
                   f"{e['from_state'] or '-'} -> {e['to_state']}  {e['comment'] or ''}")
    if t["last_run"]:
        click.echo("reproduce the failing rows (inside the warehouse):")
        click.echo("  " + t["last_run"]["reproduce_sql"].replace("\n", "\n  "))


@tickets.command("supervision")
@click.option("--all", "show_all", is_flag=True, help="include tickets already struck off the list")
@click.option("--json", "as_json", is_flag=True)
def tickets_supervision(show_all: bool, as_json: bool) -> None:
    """The supervision list (挂牌督办): overdue tickets escalated by the runs."""
    from quality.tickets import supervision_list

    rows = supervision_list(_engine(), current_only=not show_all)
    if as_json:
        return _echo_json(rows)
    if not rows:
        click.echo("nothing under supervision")
    for r in rows:
        click.echo(f"{r['ticket_id']}  {r['unit']:<5} {r['resource']:<12} {r['check_id']:<32} due {r['due_date']}  "
                   f"listed {r['listed_on']}  {r['state']}" + (f"  delisted {r['delisted_on']}" if r["delisted_on"]
                                                                 else ""))


def _done(t: dict) -> None:
    click.echo(f"{t['ticket_id']}: {t['state']}" + (f" (dispute {t['dispute_status']})"
                                                    if t.get("dispute_status") else ""))


@tickets.command("ack")
@click.argument("ticket_id")
@BY
@click.option("--comment", default="", help="optional note")
def tickets_ack(ticket_id: str, actor: str, comment: str) -> None:
    """Source unit: acknowledge a new or reopened ticket."""
    from quality.tickets import acknowledge

    _done(_act(acknowledge, ticket_id, actor, comment))


@tickets.command("rectify")
@click.argument("ticket_id")
@BY
@click.option("--comment", default="", help="what is being fixed")
def tickets_rectify(ticket_id: str, actor: str, comment: str) -> None:
    """Source unit: rectification at the source has started."""
    from quality.tickets import rectify

    _done(_act(rectify, ticket_id, actor, comment))


@tickets.command("dispute")
@click.argument("ticket_id")
@BY
@click.option("--reason", required=True, type=click.Choice(
    ["false_positive", "source_correct", "rule_not_applicable", "legacy_record", "other"]), help="reason code")
@click.option("--comment", required=True, help="why the check is wrong here")
def tickets_dispute(ticket_id: str, actor: str, reason: str, comment: str) -> None:
    """Source unit: the check is a false positive (the data centre decides)."""
    from quality.tickets import dispute

    _done(_act(dispute, ticket_id, actor, reason, comment))


@tickets.command("comment")
@click.argument("ticket_id")
@BY
@click.option("--comment", "text", required=True)
def tickets_comment(ticket_id: str, actor: str, text: str) -> None:
    """Add a comment to a ticket (any state)."""
    from quality.tickets import comment

    _done(_act(comment, ticket_id, actor, text))


@tickets.command("accept-dispute")
@click.argument("ticket_id")
@BY
@click.option("--comment", required=True, help="the data centre's decision")
def tickets_accept(ticket_id: str, actor: str, comment: str) -> None:
    """Data centre: accept a dispute; the disputed rows are waived and the next run resolves it."""
    from quality.tickets import accept_dispute

    _done(_act(accept_dispute, ticket_id, actor, comment))


@tickets.command("reject-dispute")
@click.argument("ticket_id")
@BY
@click.option("--comment", required=True, help="why the check stands")
def tickets_reject(ticket_id: str, actor: str, comment: str) -> None:
    """Data centre: reject a dispute; the unit must rectify."""
    from quality.tickets import reject_dispute

    _done(_act(reject_dispute, ticket_id, actor, comment))


COMMANDS = [tickets]
