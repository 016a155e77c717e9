"""``datarail asof``, ``datarail lineage``, ``datarail warehouse build | checksum`` on the
embedded warehouse: answers, masking, errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from datarail.cli import main
from datarail.settings import load_settings
from tests.warehouse_fixtures import D1, D2, D3, demo_catalog, load
from warehouse.engine import get_engine
from warehouse.migrate import migrate

pytestmark = pytest.mark.integration

P1 = "330102199001011234"


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("DATARAIL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATARAIL_WAREHOUSE_URL", raising=False)
    engine = get_engine(load_settings())
    migrate(engine)
    hr = demo_catalog().resource_by_table("household_register")
    row = {"resident_id": P1, "name": "张三", "gender": "男", "birth_date": "1990-01-01", "division_code": "330102",
           "address": "浙江省杭州市上城区解放路1号", "phone": "13812345678", "reg_status": "正常",
           "updated_at": "2026-11-19 08:00:00"}
    load(engine, hr, D1, [row])
    load(engine, hr, D2, [{**row, "name": "张三丰", "updated_at": "2026-11-20 08:00:00"}])

    def invoke(*args, ok=True):
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result.output
    yield invoke
    engine.dispose()


def test_build_asof_and_lineage(run):
    out = run("warehouse", "build", "--date", "2026-11-21")
    assert "base.population" in out and "full" in out
    assert "incremental" in run("warehouse", "build", "--date", "2026-11-21", "--target", "base.population")
    day1 = json.loads(run("asof", "base.population", P1, "2026-11-20", "--json"))["rows"]
    day2 = json.loads(run("asof", "base.population", P1, "2026-11-21", "--json"))["rows"]
    assert [(r["name"], r["name_src"]) for r in day1] == [("张*", "RK-GA-0001")]  # masked by default
    assert [r["name"] for r in day2] == ["张**"]
    assert day2[0]["resident_id"] == "330102********1234"
    raw = json.loads(run("asof", "ods.household_register", P1, "2026-11-20", "--json", "--unmasked"))["rows"]
    assert [(r["name"], r["phone"]) for r in raw] == [("张三", "13812345678")]
    versions = json.loads(run("asof", "household_register", P1, "2026-11-21", "--history", "--json"))["rows"]
    assert [(v["name"], v["_change"]) for v in versions] == [("张*", "updated"), ("张**", None)]
    text = run("asof", "base.population", P1, "2026-11-21")
    assert "RK-GA-0001" in text and "张三" not in text and P1 not in text
    assert "no row" in run("asof", "base.population", P1, "2026-11-19")
    lineage = run("lineage", "base.population")
    assert "RK-GA-0001" in lineage and "unit psb" in lineage and "r-20261121" in lineage
    info = json.loads(run("lineage", "base.population", "--json"))
    assert {ld["interval_key"] for ld in info["loads"]} == {D1.key, D2.key}
    sums = json.loads(run("warehouse", "checksum", "--json"))
    assert "ods.household_register_history" in sums and "base.population" in sums
    assert "pending" not in lineage
    # a load no build has read yet: lineage says the next build will
    load(get_engine(load_settings()), demo_catalog().resource_by_table("household_register"), D3, [{
        "resident_id": P1, "name": "张三丰", "gender": "男", "birth_date": "1990-01-01", "division_code": "330102",
        "address": "浙江省杭州市西湖区文三路1号", "phone": "13812345678", "reg_status": "正常",
        "updated_at": "2026-11-21 08:00:00"}])
    text = run("lineage", "base.population")
    assert "pending, for the next build (1):" in text and D3.key in text and "RK-GA-0001" in text


def test_errors_are_reported_not_raised(run):
    assert "not a date" in run("asof", "base.population", P1, "yesterday", ok=False)
    assert "no base model builds" in run("asof", "base.nothing", P1, "2026-11-21", ok=False)
    assert "no lineage recorded" in run("lineage", "base.population", ok=False)
