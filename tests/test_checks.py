"""The checks issue 5 added, each on a few inline rows through Great Expectations: sex digit
vs gender, dates in order, the division code inside a credit code, row volume against
earlier runs, freshness against the update cycle, waived keys (accepted disputes), severity
overrides from the catalog, and the streaming validation agreeing with the in-memory one."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest
from stdnum.cn import ric

from catalog.models import Field, QualityRules, Resource
from datarail.privacy import find_unmasked
from quality.divisions import load_divisions
from quality.identifiers import make_uscc, uscc_problem
from quality.suite import History, check_ids
from quality.validate import validate, validate_staged

pytestmark = pytest.mark.unit

RUN = date(2025, 1, 1)
DIVS = load_divisions()


def rid(first17: str) -> str:
    return first17 + ric.calc_check_digit(first17 + "0")


MAN = rid("33010219900101123")  # sequence 123: odd = male
WOMAN = rid("33010619850304002")  # 002: even = female
MAN2 = rid("33010620000229001")


def resource(*, quality: dict | None = None, mode: str = "snapshot", **extra_fields) -> Resource:
    fields = [Field(name="resident_id", semantic="resident_id", required=True),
              Field(name="gender", semantic="gender", values=("男", "女")),
              Field(name="valid_from", type="date"),
              Field(name="valid_to", type="date", max_offset_days=None),
              Field(name="updated_at", type="datetime"),
              *extra_fields.values()]
    return Resource(code="RK-T-0002", table="cards", name_zh="证件", name_en="Cards", unit="psb", system="huji",
                    location={"table": "t"}, update_cycle="daily", primary_key=("resident_id",), fields=tuple(fields),
                    change_tracking={"mode": mode, "column": "updated_at" if mode == "watermark" else None},
                    sharing={"type": "unconditional"}, quality=QualityRules.model_validate(quality or {}))


def row(**values) -> dict:
    r = {"resident_id": MAN, "gender": "男", "valid_from": "2010-01-01", "valid_to": "2030-01-01",
         "updated_at": "2024-12-31 08:00:00"}
    r.update(values)
    return r


def frame(rows: list[dict]) -> pd.DataFrame:
    raw = pd.DataFrame(rows).astype("str")
    raw.insert(0, "_row", pd.Series(range(1, len(rows) + 1), dtype="int64"))
    return raw


def run(res: Resource, rows: list[dict], **kwargs):
    o = validate(res, frame(rows), run_date=RUN, divisions=DIVS, **kwargs)
    assert o.evaluated == len(rows) == len(o.passed) + len(o.quarantined)
    return o


def failures(o) -> dict[str, list[int]]:
    return {c.check_id: c.failed_rows for c in o.checks if c.failed_rows}


def check(o, check_id):
    return next(c for c in o.checks if c.check_id == check_id)


# --- sex digit vs declared gender ------------------------------------------------------------------

def test_id_gender_pairs_the_id_with_the_gender_field():
    o = run(resource(), [row(), row(resident_id=WOMAN, gender="女"), row(resident_id=MAN2, gender="女")])
    assert failures(o) == {"id_gender:resident_id": [3]}
    assert o.quarantined["_row"].tolist() == [3]
    [reason] = json.loads(o.quarantined["reasons"].iloc[0])
    assert reason["check"] == "id_gender:resident_id" and "declared gender is 女" in reason["message"]
    assert find_unmasked(reason["message"]) == []
    assert check(o, "id_gender:resident_id").expectation == "expect_column_pair_sex_digit_to_match_gender"


def test_id_gender_is_not_judged_on_an_invalid_id_or_gender():
    bad = MAN[:17] + ("0" if MAN[17] != "0" else "1")
    o = run(resource(), [row(resident_id=bad, gender="女"), row(resident_id=MAN2, gender="未知"),
                         row(resident_id=WOMAN, gender=None)])
    # reported once, under the check that owns the fault
    assert failures(o) == {"resident_id:resident_id": [1], "values:gender": [2]}


def test_id_gender_with_a_fixed_gender():
    marriage = resource(quality={"checks": [{"kind": "id_gender", "field": "resident_id", "gender": "女"}]})
    o = run(marriage, [row(resident_id=WOMAN, gender=None), row(gender=None)])
    assert failures(o) == {"id_gender:resident_id": [2]}
    assert "女" in check(o, "id_gender:resident_id").rule


def test_auto_pairing_can_be_switched_off():
    res = resource(quality={"auto_id_gender": False})
    assert "id_gender:resident_id" not in check_ids(res)


# --- dates in order ------------------------------------------------------------------------------

ORDERED = {"checks": [{"kind": "date_order", "fields": ["valid_from", "valid_to"]}]}


def test_date_order():
    o = run(resource(quality=ORDERED), [
        row(), row(resident_id=WOMAN, gender="女", valid_from="2020-05-01", valid_to="2020-04-30"),
        row(resident_id=MAN2, valid_from="2020-05-01", valid_to="2020-05-01"),  # same day: in order
        row(resident_id=rid("33010219800101001"), valid_to=None)])  # open-ended: not judged
    assert failures(o) == {"date_order:valid_from+valid_to": [2]}
    [reason] = json.loads(o.quarantined["reasons"].iloc[0])
    assert "valid_from '2020-05-01' is after valid_to '2020-04-30'" in reason["message"]


def test_date_order_skips_dates_already_failing_their_range_or_type():
    o = run(resource(quality=ORDERED), [row(valid_from="2030-01-01", valid_to="2026-01-01"),
                                        row(resident_id=WOMAN, gender="女", valid_from="2019-02-30")])
    assert failures(o) == {"date_range:valid_from": [1], "type:valid_from": [2]}


def test_date_order_on_a_non_date_field_is_refused():
    res = resource(quality={"checks": [{"kind": "date_order", "fields": ["gender", "valid_to"]}]})
    with pytest.raises(Exception, match="not a date"):
        check_ids(res)


@pytest.mark.parametrize("bad", [
    {"checks": [{"kind": "date_order", "fields": ["valid_from"]}]},
    {"checks": [{"kind": "id_gender", "field": "resident_id"}]},
    {"checks": [{"kind": "exists", "field": "resident_id"}]},
    {"checks": [{"kind": "date_order", "fields": ["valid_from", "nope"]}]},
    {"freshness": {"column": "nope"}},
    {"severity": {"phone": "fatal"}},
])
def test_quality_block_is_validated(bad):
    with pytest.raises(ValueError):
        resource(quality=bad)


# --- the division code inside a credit code --------------------------------------------------------

@pytest.mark.parametrize(("division", "reason"), [("330100", None), ("100000", None), ("339999", "division code unknown")])
def test_uscc_embedded_division_code(division, reason):
    assert uscc_problem(make_uscc("91", division, "MA2B3C4D"), divisions=DIVS) == reason


def test_uscc_division_check_runs_in_validation():
    res = Resource(code="FR-T-0001", table="firms", name_zh="企业", name_en="Firms", unit="amr", system="api",
                   location={"endpoint": "/x"}, update_cycle="daily", primary_key=("uscc",),
                   fields=(Field(name="uscc", semantic="uscc", required=True),), sharing={"type": "unconditional"})
    rows = [{"uscc": make_uscc("91", "330100", "MA2B3C4D")}, {"uscc": make_uscc("91", "339999", "MA2B3C4E")}]
    o = run(res, rows)
    assert failures(o) == {"uscc:uscc": [2]}
    assert json.loads(o.quarantined["reasons"].iloc[0])[0]["message"].endswith("division code unknown")


# --- volume against earlier runs -----------------------------------------------------------------

def test_volume_without_a_baseline_passes():
    o = run(resource(), [row()], history=History(previous_rows=[10, 10]))  # 2 < min_history 3
    v = check(o, "volume:rows")
    assert v.failed == 0 and v.evaluated == 1 and "no baseline yet" in v.rule


def test_a_tenth_of_the_usual_rows_fails_and_quarantines_the_delivery():
    rows = [row(resident_id=rid(f"33010219900101{2 * i + 1:03d}")) for i in range(3)]
    o = run(resource(), rows, history=History(previous_rows=[30, 31, 29, 30]))
    v = check(o, "volume:rows")
    assert (v.failed, v.severity, v.observed, v.expectation) == (1, "blocking", 3,
                                                                 "expect_table_row_count_to_be_between")
    assert "at least 50% of the median (30)" in v.rule and "15 rows" in v.rule
    assert len(o.passed) == 0 and o.quarantined["_row"].tolist() == [1, 2, 3]
    assert all(json.loads(r)[-1]["check"] == "volume:rows" for r in o.quarantined["reasons"])


def test_half_the_usual_rows_passes_and_volume_can_be_a_warning():
    rows = [row(resident_id=rid(f"33010219900101{2 * i + 1:03d}")) for i in range(15)]
    assert check(run(resource(), rows, history=History(previous_rows=[30] * 5)), "volume:rows").failed == 0
    lenient = resource(quality={"severity": {"volume": "warning"}})
    o = run(lenient, rows[:3], history=History(previous_rows=[30] * 5))
    assert check(o, "volume:rows").failed == 1 and len(o.passed) == 3


def test_watermark_resources_have_no_volume_check_unless_asked():
    assert "volume:rows" not in check_ids(resource(mode="watermark"))
    assert "volume:rows" in check_ids(resource(mode="watermark", quality={"volume": {"enabled": True}}))


# --- freshness against the update cycle ------------------------------------------------------------

def test_freshness_daily_cycle():
    fresh = run(resource(), [row(updated_at="2024-12-31 23:00:00")])
    stale = run(resource(), [row(updated_at="2024-12-30 23:00:00")])
    assert check(fresh, "freshness:updated_at").failed == 0
    f = check(stale, "freshness:updated_at")
    assert (f.failed, f.severity, f.evaluated, f.observed) == (1, "warning", 1, "2024-12-30T23:00:00")
    assert len(stale.passed) == 1  # a warning: the rows still load
    assert "2024-12-31" in f.rule and stale.latest_update == "2024-12-30"


def test_freshness_of_an_empty_incremental_delivery_comes_from_earlier_runs():
    empty = frame([row()]).iloc[:0]
    stale = validate(resource(mode="watermark"), empty, run_date=RUN, divisions=DIVS,
                     history=History(previous_latest_update="2024-11-01 00:00:00"))
    f = check(stale, "freshness:updated_at")
    assert (f.failed, f.expectation) == (1, "history") and stale.latest_update == "2024-11-01"
    unknown = validate(resource(mode="watermark"), empty, run_date=RUN, divisions=DIVS)
    assert check(unknown, "freshness:updated_at").failed == 0


def test_freshness_max_age_from_the_catalog():
    res = resource(quality={"freshness": {"max_age_days": 5}})
    assert check(run(res, [row(updated_at="2024-12-27 00:00:00")]), "freshness:updated_at").failed == 0


# --- waivers (accepted disputes) and evidence ----------------------------------------------------

def test_waived_keys_no_longer_fail_their_check():
    rows = [row(), row(resident_id=MAN2, gender="女"), row(resident_id=WOMAN, gender="男")]
    waivers = {"id_gender:resident_id": frozenset({json.dumps([MAN2])})}
    o = run(resource(), rows, history=History(waivers=waivers))
    c = check(o, "id_gender:resident_id")
    assert (c.failed_rows, c.waived) == ([3], 1)
    assert o.quarantined["_row"].tolist() == [3]


def test_waived_duplicate_keys():
    rows = [row(), row(), row(resident_id=WOMAN, gender="女")]
    o = run(resource(), rows, history=History(waivers={"unique:resident_id": frozenset({json.dumps([MAN])})}))
    assert check(o, "unique:resident_id").failed == 0 and check(o, "unique:resident_id").waived == 2


def test_failures_hold_the_raw_key_of_every_failing_row():
    rows = [row(resident_id=rid(f"33010219900101{i:03d}"), gender="女") for i in range(1, 8, 2)]  # odd: male
    o = run(resource(), rows, chunk_rows=2)
    assert o.failures["check_id"].unique().tolist() == ["id_gender:resident_id"]
    assert o.failures["_row"].tolist() == [1, 2, 3, 4]
    assert json.loads(o.failures["key"].iloc[0]) == [rows[0]["resident_id"]]  # raw: inside the warehouse
    c = check(o, "id_gender:resident_id")
    assert len(c.failed_keys) == 4 and find_unmasked(json.dumps(c.to_dict(), ensure_ascii=False)) == []


# --- severity overrides and the GX result ----------------------------------------------------------

def test_severity_override_by_check_id():
    res = resource(phone=Field(name="phone", semantic="phone"), quality={"severity": {"phone:phone": "blocking"}})
    o = run(res, [row(phone="12345")])
    assert check(o, "phone:phone").severity == "blocking" and o.quarantined["_row"].tolist() == [1]


def test_gx_result_is_masked_and_merged_over_chunks():
    rows = [row(resident_id=rid(f"33010219900101{i:03d}"), gender="女") for i in range(1, 8, 2)]
    o = run(resource(), rows, chunk_rows=1)
    entry = next(r for r in o.gx_result["results"]
                 if r["expectation_config"]["meta"]["check_id"] == "id_gender:resident_id")
    assert entry["result"]["unexpected_count"] == 4 and entry["result"]["element_count"] == 4
    assert o.gx_result["statistics"]["evaluated_expectations"] == len(o.checks)
    assert find_unmasked(json.dumps(o.gx_result, ensure_ascii=False, default=str)) == []


# --- streaming equals in-memory ----------------------------------------------------------------

def test_validate_staged_streams_parquet_parts_with_the_same_verdicts(tmp_path):
    rows = [row(), row(), row(resident_id=WOMAN, gender="男"), row(resident_id=MAN2, valid_from="2019-02-30"),
            row(resident_id=rid("33010219800101001"), updated_at="2020-01-01 00:00:00")]
    raw = frame(rows)
    parts = [tmp_path / "part-00000.parquet", tmp_path / "part-00001.parquet"]
    raw.iloc[:3].to_parquet(parts[0], index=False)
    raw.iloc[3:].to_parquet(parts[1], index=False)
    memory = validate(resource(), raw, run_date=RUN, divisions=DIVS)
    staged = validate_staged(resource(), parts, tmp_path / "out", run_date=RUN, divisions=DIVS, chunk_rows=2)
    assert [(c.check_id, c.failed, c.failed_rows) for c in staged.checks] == \
        [(c.check_id, c.failed, c.failed_rows) for c in memory.checks]
    assert (staged.n_passed, staged.n_quarantined) == (len(memory.passed), len(memory.quarantined))
    passed = pd.read_parquet(staged.files["passed"])
    assert passed["_row"].tolist() == memory.passed["_row"].tolist()
    assert pd.read_parquet(staged.files["quarantined"])["key"].tolist() == memory.quarantined["key"].tolist()
    assert len(pd.read_parquet(staged.files["failures"])) == len(memory.failures)
