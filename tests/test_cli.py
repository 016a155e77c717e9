"""The ``datarail`` command line on a throwaway runtime folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from datarail.cli import main

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("DATARAIL_HOME", str(tmp_path / "home"))

    def invoke(*args, ok=True):
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result.output
    return invoke


def test_catalog_validate_reports_counts(run):
    out = run("catalog", "validate")
    assert "OK" in out and "sharing needs" in out


def test_catalog_validate_names_file_entry_and_field(run, tmp_path, monkeypatch):
    bad = tmp_path / "cat"
    shutil.copytree(REPO / "catalog" / "demo", bad)
    f = bad / "resources" / "psb.yaml"
    f.write_text(f.read_text(encoding="utf-8").replace("primary_key: [resident_id]", "primary_key: [nope]", 1),
                 encoding="utf-8")
    monkeypatch.setenv("DATARAIL_CATALOG", str(bad))
    out = run("catalog", "validate", ok=False)
    assert str(f) in out and "RK-GA-0001" in out and "primary_key" in out


def test_warehouse_migrate_status_and_empty_reads(run):
    assert "0001" in run("warehouse", "migrate")
    assert "nothing" in run("warehouse", "migrate")
    status = json.loads(run("warehouse", "status", "--json"))
    assert {s["state"] for s in status} == {"applied"}
    assert json.loads(run("tickets", "list", "--json")) == []
    assert "no metric snapshot yet" in run("metrics", ok=False)
