"""``datarail tickets``: list / show / supervision with --json, and the workflow commands the
source units and the data centre use (ack, rectify, dispute, comment, accept-dispute,
reject-dispute), on an embedded warehouse filled by real validation runs."""

from __future__ import annotations

import json
from datetime import date

import pytest
from click.testing import CliRunner

from datarail.cli import main
from datarail.privacy import find_unmasked
from datarail.settings import load_settings
from quality.tickets import escalate_overdue
from tests.test_tickets import D1, MEN, TID, person, run_interval
from warehouse.engine import get_engine
from warehouse.migrate import migrate

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(tmp_path):
    env = {"DATARAIL_HOME": str(tmp_path / "home"), "DATARAIL_ACTOR": "psb-zhang"}
    engine = get_engine(load_settings(env))
    migrate(engine)
    run_interval(engine, D1, [person(0, gender="女"), person(1, phone="12345"), person(2)])
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(main, ["tickets", *args], env=env, catch_exceptions=False)
        assert (result.exit_code == 0) is ok, result.output
        assert find_unmasked(result.output) == [], result.output
        return result.output
    invoke.engine = engine
    return invoke


def test_list_and_show_json(cli):
    rows = json.loads(cli("list", "--json"))
    assert {(t["check_id"], t["state"], t["failed"]) for t in rows} == {
        ("id_gender:resident_id", "new", 1), ("phone:phone", "new", 1)}
    assert "failed_keys" not in rows[0]  # keys stay in the warehouse; samples are masked
    assert "id_gender:resident_id" in cli("list", "--unit", "psb", "--live")
    shown = json.loads(cli("show", TID, "--json"))
    assert shown["events"][0]["action"] == "opened" and "check_failures" in shown["last_run"]["reproduce_sql"]
    text = cli("show", TID)
    assert "history:" in text and "reproduce the failing rows" in text and MEN[0][:6] in text
    assert "no ticket DQ-NOPE" in cli("show", "DQ-NOPE", ok=False)


def test_workflow_commands_record_who_and_why(cli):
    assert "acknowledged" in cli("ack", TID, "--comment", "seen")
    assert "cannot ack" in cli("ack", TID, ok=False)
    assert "rectifying" in cli("rectify", TID, "--comment", "fixing at the source")
    out = cli("dispute", TID, "--reason", "legacy_record", "--comment", f"登记如此 {MEN[0]} 13812345678")
    assert "disputed (dispute pending)" in out
    assert "Invalid value for '--reason'" in cli("dispute", TID, "--reason", "nope", "--comment", "x", ok=False)
    assert "rectifying (dispute rejected)" in cli("reject-dispute", TID, "--by", "centre-li", "--comment", "no")
    cli("dispute", TID, "--reason", "source_correct", "--comment", "checked again")
    assert "disputed (dispute accepted)" in cli("accept-dispute", TID, "--by", "centre-li", "--comment", "ok")
    cli("comment", TID, "--comment", "thanks")
    events = json.loads(cli("show", TID, "--json"))["events"]
    assert [(e["action"], e["actor"]) for e in events] == [
        ("opened", "datarail"), ("acknowledge", "psb-zhang"), ("rectify", "psb-zhang"), ("dispute", "psb-zhang"),
        ("reject_dispute", "centre-li"), ("dispute", "psb-zhang"), ("accept_dispute", "centre-li"),
        ("comment", "psb-zhang")]
    assert "330102********" in events[3]["comment"] and "138****5678" in events[3]["comment"]


def test_supervision_list(cli):
    assert "nothing under supervision" in cli("supervision")
    escalate_overdue(cli.engine, date(2026, 11, 28))
    rows = json.loads(cli("supervision", "--json"))
    assert [(r["ticket_id"], r["listed_on"]) for r in rows] == [(TID, "2026-11-28")]
    assert "[supervised]" in cli("list", "--supervised")
