"""validate(): each check id on a few inline rows, run through Great Expectations.

Each test asserts exactly which ``_row`` values fail which check, that everything else
passes, and that evaluated == passed + quarantined.
"""

from __future__ import annotations

import importlib
import json
from datetime import date

import pandas as pd
import pytest
from stdnum.cn import ric

from catalog.models import Field, Resource
from datarail.privacy import find_unmasked
from quality.divisions import load_divisions
from quality.identifiers import make_uscc
from quality.validate import ValidationError, validate

pytestmark = pytest.mark.unit

RUN = date(2025, 1, 1)
DIVS = load_divisions()


def rid(first17: str) -> str:
    """A resident ID whose check digit python-stdnum computed."""
    return first17 + ric.calc_check_digit(first17 + "0")


A = rid("33010219900101123")
B = rid("33010619850304002")
C = rid("33010620000229001")
BAD_CHECK = A[:17] + ("0" if A[17] != "0" else "1")


def household(**changes) -> Resource:
    fields = {f.name: f for f in (
        Field(name="resident_id", semantic="resident_id", required=True),
        Field(name="name", semantic="person_name", required=True),
        Field(name="gender", values=("男", "女")),
        Field(name="birth_date", type="date", required=True),
        Field(name="division_code", semantic="division_code"),
        Field(name="phone", semantic="phone"),
        Field(name="updated_at", type="datetime"),
    )}
    fields.update(changes)
    return Resource(
        code="RK-GA-0001", table="household_register", name_zh="户籍人口信息", name_en="Household register",
        unit="psb", system="huji", location={"table": "t_hjrk"}, update_cycle="daily",
        sharing={"type": "conditional", "condition": "按需", "granted_to": ["mca"]},
        primary_key=("resident_id",), fields=tuple(fields.values()))


def person(**values) -> dict:
    row = {"resident_id": A, "name": "张三", "gender": "男", "birth_date": "1990-01-01",
           "division_code": "330102", "phone": "13812345678", "updated_at": "2024-12-31 08:00:00"}
    row.update(values)
    return row


def run(resource: Resource, rows: list[dict], **kwargs):
    raw = pd.DataFrame(rows).astype("str")
    raw.insert(0, "_row", pd.Series(range(1, len(rows) + 1), dtype="int64"))
    raw["_source"] = "table t_hjrk"
    outcome = validate(resource, raw, run_date=RUN, divisions=DIVS, **kwargs)
    assert outcome.evaluated == len(rows) == len(outcome.passed) + len(outcome.quarantined)
    return outcome


def failures(outcome) -> dict[str, list[int]]:
    return {c.check_id: c.failed_rows for c in outcome.checks if c.failed_rows}


def quarantined_rows(outcome) -> list[int]:
    return outcome.quarantined["_row"].tolist()


# --- one test per check id ------------------------------------------------------------------------

def test_all_good_rows_pass_every_check():
    o = run(household(), [person(), person(resident_id=B, name="欧阳娜娜", gender="女", birth_date="1985/3/4")])
    assert failures(o) == {}
    assert o.passed["_row"].tolist() == [1, 2] and o.quarantined.empty
    assert o.gx_success is True
    assert [c.check_id for c in o.checks] == [
        "type:birth_date", "type:updated_at", "not_null:resident_id", "not_null:name", "not_null:birth_date",
        "unique:resident_id", "resident_id:resident_id", "division_code:division_code",
        "date_range:birth_date", "date_range:updated_at", "values:gender", "phone:phone",
        "volume:rows", "freshness:updated_at"]
    assert o.gx_statistics["evaluated_expectations"] == len(o.checks)
    assert all(c.evaluated == (1 if c.scope == "dataset" and c.kind != "unique" else 2) and c.failed == 0
               for c in o.checks)


def test_type_failures_are_reported_only_under_type():
    o = run(household(), [person(), person(resident_id=B, birth_date="2019-02-30"),
                          person(resident_id=C, birth_date="1990/1/1"),
                          person(resident_id=rid("33010219800101001"), birth_date="not a date",
                                 updated_at="2024-13-01 00:00:00")])
    # no not_null:birth_date, no date_range for rows 2 and 4
    assert failures(o) == {"type:birth_date": [2, 4], "type:updated_at": [4]}
    assert quarantined_rows(o) == [2, 4]
    assert o.passed["birth_date"].tolist() == [pd.Timestamp("1990-01-01")] * 2


def test_not_null():
    o = run(household(), [person(), person(resident_id=B, name=None), person(resident_id=C, name="  ")])
    assert failures(o) == {"not_null:name": [2, 3]}


def test_null_optional_values_fail_nothing():
    o = run(household(), [person(gender=None, division_code=None, phone=None, updated_at=None)])
    assert failures(o) == {} and len(o.passed) == 1


def test_unique_fails_every_row_sharing_the_key():
    o = run(household(), [person(), person(resident_id=B), person(), person(resident_id=C), person()])
    assert failures(o) == {"unique:resident_id": [1, 3, 5]}
    assert quarantined_rows(o) == [1, 3, 5]
    reasons = json.loads(o.quarantined["reasons"].iloc[0])
    assert reasons == [{"check": "unique:resident_id", "field": "resident_id",
                        "message": "primary key (resident_id) shared by 3 rows / 主键重复（3 行共用）"}]


def test_compound_unique():
    marriage = Resource(
        code="RK-MZ-0001", table="marriage_registration", name_zh="婚姻登记信息", name_en="Marriage",
        unit="mca", system="marriage", location={"table": "hy_djxx"}, update_cycle="daily",
        sharing={"type": "unconditional"}, primary_key=("cert_no", "reg_type"),
        fields=(Field(name="cert_no", required=True), Field(name="reg_type", required=True, values=("结婚", "离婚")),
                Field(name="male_id", semantic="resident_id")))
    rows = [{"cert_no": "J1", "reg_type": "结婚", "male_id": A}, {"cert_no": "J1", "reg_type": "离婚", "male_id": A},
            {"cert_no": "J1", "reg_type": "结婚", "male_id": B}, {"cert_no": "J2", "reg_type": "结婚", "male_id": B}]
    o = run(marriage, rows)
    assert failures(o) == {"unique:cert_no+reg_type": [1, 3]}
    assert o.quarantined["key"].tolist() == ['["J1", "结婚"]'] * 2
    check = next(c for c in o.checks if c.kind == "unique")
    assert check.field == "cert_no+reg_type" and check.expectation == "expect_compound_columns_to_be_unique"


def test_resident_id():
    o = run(household(), [person(), person(resident_id=BAD_CHECK),
                          person(resident_id=rid("33010219900230123")),  # 1990-02-30
                          person(resident_id=rid("33010220250102123")),  # born after the run date
                          person(resident_id=rid("99999919900101123")),  # unknown birthplace
                          person(resident_id=A[:17])])  # 17 characters
    assert failures(o) == {"resident_id:resident_id": [2, 3, 4, 5, 6]}
    messages = [json.loads(r)[0]["message"] for r in o.quarantined["reasons"]]
    assert [m.rsplit(": ", 1)[1] for m in messages] == [
        "check character", "birth date", "birth date in the future", "birthplace code unknown", "length"]
    assert find_unmasked(" ".join(messages)) == []
    check = next(c for c in o.checks if c.kind == "resident_id")
    assert check.expectation == "expect_column_values_to_be_valid_resident_id"
    assert "GB 11643" in check.rule and "身份证号" in check.rule and "weights" in check.rule


def test_resident_id_birthplace_follows_the_policy():
    old = rid("33010319900101123")  # 下城区, abolished 2021
    rows = [person(resident_id=old, division_code="330103"), person(resident_id=B)]
    assert failures(run(household(), rows, division_policy="historic")) == {}
    assert failures(run(household(), rows, division_policy="current")) == {
        "resident_id:resident_id": [1], "division_code:division_code": [1]}


def test_uscc():
    business = Resource(
        code="FR-SC-0001", table="business_registration", name_zh="企业登记信息", name_en="Business registration",
        unit="amr", system="api", location={"endpoint": "/api/v1/enterprises"}, update_cycle="daily",
        sharing={"type": "unconditional"}, primary_key=("uscc",),
        fields=(Field(name="uscc", semantic="uscc", required=True), Field(name="legal_rep_id", semantic="resident_id")))
    good = make_uscc("91", "330100", "MA2B3C4D")
    rows = [{"uscc": "91110000600037341L", "legal_rep_id": A}, {"uscc": "91110000600037341N", "legal_rep_id": A},
            {"uscc": good, "legal_rep_id": None}, {"uscc": "9111000060003734IL", "legal_rep_id": B}]
    o = run(business, rows)
    assert failures(o) == {"uscc:uscc": [2, 4]}
    reasons = [json.loads(r)[0]["message"] for r in o.quarantined["reasons"]]
    assert reasons[0].endswith("GB 32100: check character") and reasons[1].endswith("GB 32100: characters")


def test_division_code():
    o = run(household(), [person(), person(resident_id=B, division_code="999999"),
                          person(resident_id=C, division_code="3301")])
    assert failures(o) == {"division_code:division_code": [2, 3]}


def test_date_range_bounds_are_inclusive_and_datetimes_may_fall_on_the_run_date():
    o = run(household(), [
        person(resident_id=rid("33010219000101001"), birth_date="1900-01-01", updated_at="2025-01-01 23:59:59"),
        person(resident_id=rid("33010218991231001"), birth_date="1899-12-31"),
        person(resident_id=rid("33010220250101001"), birth_date="2025-01-01"),
        person(resident_id=rid("33010219900101005"), birth_date="2025-01-02", updated_at="2025-01-02 00:00:00"),
    ])
    # every ID is valid (row 3 was born on the run date itself)
    assert failures(o) == {"date_range:birth_date": [2, 4], "date_range:updated_at": [4]}


def test_date_range_uses_field_min_and_offset():
    resource = household(
        birth_date=Field(name="birth_date", type="date", required=True, min=date(1950, 1, 1)),
        updated_at=Field(name="updated_at", type="datetime", max_offset_days=None))
    o = run(resource, [person(), person(resident_id=B, birth_date="1949-12-31", updated_at="2999-01-01 00:00:00")])
    assert failures(o) == {"date_range:birth_date": [2]}
    rule = next(c.rule for c in o.checks if c.check_id == "date_range:updated_at")
    assert "1900-01-01" in rule and "must not be before" in rule


def test_values():
    o = run(household(), [person(), person(resident_id=B, gender="M"), person(resident_id=C, gender=None)])
    assert failures(o) == {"values:gender": [2]}


def test_phone_is_a_warning_and_the_row_still_loads():
    o = run(household(), [person(), person(resident_id=B, phone="12345"),
                          person(resident_id=C, phone="0571-88889999")])
    assert failures(o) == {"phone:phone": [2]}
    assert o.quarantined.empty and o.passed["_row"].tolist() == [1, 2, 3]
    check = next(c for c in o.checks if c.kind == "phone")
    assert check.severity == "warning" and check.expectation == "expect_column_values_to_match_regex"
    assert o.gx_success is False  # GX's own verdict counts the warning


# --- outputs -------------------------------------------------------------------------------------

def test_quarantine_record_key_and_masked_evidence():
    o = run(household(), [person(), person(resident_id=B, name=None, gender="M", phone="12345")])
    q = o.quarantined.iloc[0]
    assert q["_row"] == 2
    assert json.loads(q["key"]) == [B]  # raw: stays in the warehouse
    record = json.loads(q["record"])
    assert record["resident_id"] == B and record["name"] is None and record["_source"] == "table t_hjrk"
    assert [r["check"] for r in json.loads(q["reasons"])] == ["not_null:name", "values:gender", "phone:phone"]
    assert find_unmasked(q["reasons"]) == []
    for check in o.checks:
        text = json.dumps(check.to_dict(), ensure_ascii=False)
        assert find_unmasked(text) == [], check.check_id
    phone = next(c for c in o.checks if c.kind == "phone")
    assert phone.failed_keys == [json.dumps([B[:6] + "********" + B[-4:]])]
    assert phone.sample == [{"_row": 2, "resident_id": B[:6] + "********" + B[-4:], "name": None,
                             "gender": "M", "birth_date": "1990-01-01", "division_code": "330102",
                             "phone": "1**45", "updated_at": "2024-12-31 08:00:00"}]


def test_passed_frame_is_typed():
    resource = household(updated_at=Field(name="visits", type="integer"))
    o = run(resource, [person(visits="3"), person(resident_id=B, visits="x")])
    assert list(o.passed.columns) == ["resident_id", "name", "gender", "birth_date", "division_code", "phone",
                                      "visits", "_row"]
    assert str(o.passed["visits"].dtype) == "Int64" and o.passed["visits"].tolist() == [3]
    assert pd.api.types.is_datetime64_any_dtype(o.passed["birth_date"])
    assert failures(o) == {"type:visits": [2]}


def test_empty_delivery():
    raw = pd.DataFrame({"_row": pd.Series([], dtype="int64"),
                        **{f.name: pd.Series([], dtype="str") for f in household().fields}})
    o = validate(household(), raw, run_date=RUN, divisions=DIVS)
    assert o.evaluated == 0 and o.passed.empty and o.quarantined.empty and all(c.failed == 0 for c in o.checks)


@pytest.mark.parametrize(("raw", "policy"), [
    (pd.DataFrame({"resident_id": [A]}), "historic"),  # no _row
    (pd.DataFrame({"_row": [1, 1], "resident_id": [A, B]}), "historic"),  # duplicate _row
    (pd.DataFrame({"_row": [1, None], "resident_id": [A, B]}), "historic"),  # empty _row
    (pd.DataFrame({"_row": [1], "resident_id": [A]}), "sometimes"),
])
def test_bad_input_raises_typed_error(raw, policy):
    with pytest.raises(ValidationError):
        validate(household(), raw, run_date=RUN, divisions=DIVS, division_policy=policy)


def test_reimporting_the_expectations_module_is_harmless():
    import quality.expectations as qe

    importlib.reload(qe)
    importlib.reload(qe)
    o = run(household(), [person(), person(resident_id=BAD_CHECK)])
    assert failures(o) == {"resident_id:resident_id": [2]}
