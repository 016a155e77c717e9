"""Check results are stored per run and check with counts and the failure percent."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from warehouse.load import insert_check_results

pytestmark = pytest.mark.integration


def check(check_id: str, evaluated: int, failed: int) -> dict:
    return {"check_id": check_id, "field": "f", "severity": "blocking", "rule": "r", "evaluated": evaluated,
            "failed": failed, "failed_keys": [], "sample": []}


def test_failure_percent_is_stored(warehouse_engine):
    with warehouse_engine.begin() as conn:
        insert_check_results(conn, "RK-T-0001", "k1", [check("a", 200, 3), check("b", 0, 0), check("c", 10, 0)])
    with warehouse_engine.connect() as conn:
        rows = dict(conn.execute(sa.text(
            "SELECT check_id, failed_pct FROM quality.check_results ORDER BY check_id")).all())
    assert rows == {"a": pytest.approx(1.5), "b": None, "c": 0.0}
