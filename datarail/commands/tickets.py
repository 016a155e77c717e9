"""``datarail tickets ...``: feedback tickets to source units."""

from __future__ import annotations

import click

from datarail.cli import _echo_json
from datarail.settings import load_settings


@click.group()
def tickets() -> None:
    """Feedback tickets to source units."""


@tickets.command("list")
@click.option("--unit", help="source unit code")
@click.option("--state", help="new, acknowledged, rectifying, disputed, reopened, resolved")
@click.option("--json", "as_json", is_flag=True)
def tickets_list(unit: str | None, state: str | None, as_json: bool) -> None:
    """List tickets (samples masked; failing keys stay in the warehouse)."""
    from quality.tickets import list_tickets
    from warehouse.engine import get_engine

    rows = list_tickets(get_engine(load_settings()), unit=unit, state=state)
    if as_json:
        return _echo_json(rows)
    if not rows:
        click.echo("no tickets")
    for t in rows:
        click.echo(f"{t['ticket_id']}  {t['state']:<10} {t['unit']:<5} {t['resource']:<12} {t['check_id']:<32} "
                   f"{t['failed']}/{t['evaluated']} rows  due {t['due_date']}")



COMMANDS = [tickets]
