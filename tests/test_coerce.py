"""Type coercion of staged text: date shapes, impossible dates, numbers, booleans."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pytest

from catalog.models import Field, Resource
from quality.coerce import CoercionError, coerce_frame, parse_date, parse_datetime

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text", [
    "2018-05-16", "2018/5/16", "2018/05/16", "2018.5.16", "20180516", "2018年5月16日", "2018-5-16",
    "2018-05-16 08:30:00", "2018-05-16T08:30:00", "2018/5/16 8:30", " 2018-05-16 ",
])
def test_date_shapes(text):
    assert parse_date(text) == date(2018, 5, 16)


@pytest.mark.parametrize(("text", "expected"), [
    ("2018-05-16 08:30:00", datetime(2018, 5, 16, 8, 30)),
    ("2018-05-16T08:30:00", datetime(2018, 5, 16, 8, 30)),
    ("2018/5/16 8:30", datetime(2018, 5, 16, 8, 30)),
    ("2018年5月16日 08:30:05", datetime(2018, 5, 16, 8, 30, 5)),
    ("2018-05-16 08:30:00.25", datetime(2018, 5, 16, 8, 30, 0, 250000)),
    ("20180516083000", datetime(2018, 5, 16, 8, 30)),
    ("2018-05-16T00:30:00Z", datetime(2018, 5, 16, 8, 30)),  # UTC -> China Standard Time
    ("2018-05-16T08:30:00+08:00", datetime(2018, 5, 16, 8, 30)),
    ("2018-05-16", datetime(2018, 5, 16)),
])
def test_datetime_shapes(text, expected):
    assert parse_datetime(text) == expected


@pytest.mark.parametrize("text", [
    "2019-02-30", "2018-13-01", "2018-00-10", "20190230", "2018年2月30日", "2018-05-16 24:00:00",
    "2018-5/16", "16/05/2018", "2018-05", "abc", "2018-05-16x",
])
def test_bad_dates_fail(text):
    with pytest.raises(CoercionError):
        parse_date(text)
    with pytest.raises(ValueError):  # CoercionError is a ValueError too
        parse_datetime(text)


@pytest.mark.parametrize("text", [None, "", "   "])
def test_blank_is_none(text):
    assert parse_date(text) is None


def _resource() -> Resource:
    return Resource(
        code="TEST-0001", table="t_test", name_zh="测试", name_en="Test", unit="psb", system="huji",
        location={"table": "t"}, update_cycle="daily", sharing={"type": "unconditional"}, primary_key=("id",),
        fields=(Field(name="id"), Field(name="born", type="date"), Field(name="seen", type="datetime"),
                Field(name="n", type="integer"), Field(name="amount", type="decimal"),
                Field(name="active", type="boolean")))


def test_coerce_frame_types_and_failure_masks():
    raw = pd.DataFrame({
        "_row": [1, 2, 3, 4],
        "id": ["a", " b ", "", None],
        "born": ["2018-05-16", "2018年5月16日", "2019-02-30", None],
        "seen": ["2018-05-16 08:30:00", "2018/5/16 8:30", "yesterday", ""],
        "n": ["1", "1,234", "1.5", "12.0"],
        "amount": ["3.50", "1,234.5", "abc", None],
        "active": ["是", "false", "maybe", "1"],
    })
    typed, failed = coerce_frame(_resource(), raw)
    assert list(typed.columns) == ["id", "born", "seen", "n", "amount", "active", "_row"]
    assert typed["id"].tolist()[:2] == ["a", "b"] and typed["id"].isna().tolist() == [False, False, True, True]
    assert pd.api.types.is_datetime64_any_dtype(typed["born"])
    assert typed["born"].tolist()[:2] == [pd.Timestamp("2018-05-16")] * 2
    assert typed["seen"].tolist()[:2] == [pd.Timestamp("2018-05-16 08:30")] * 2
    assert str(typed["n"].dtype) == "Int64" and typed["n"].tolist() == [1, 1234, pd.NA, 12]
    assert typed["amount"].tolist()[:2] == [3.5, 1234.5]
    assert str(typed["active"].dtype) == "boolean" and typed["active"].tolist() == [True, False, pd.NA, True]
    assert {k: v.tolist() for k, v in failed.items()} == {
        "id": [False] * 4,
        "born": [False, False, True, False],  # null is not a failure
        "seen": [False, False, True, False],  # '' is null
        "n": [False, False, True, False],
        "amount": [False, False, True, False],
        "active": [False, False, True, False],
    }


def test_coerce_frame_missing_column_is_all_null():
    raw = pd.DataFrame({"_row": [1], "id": ["a"]})
    typed, failed = coerce_frame(_resource(), raw)
    assert typed["born"].isna().all() and not failed["born"].any()


def test_early_dates_are_kept_for_range_checks():
    # datetime64[us] holds year 1066; the range check, not the type check, rejects it
    typed, failed = coerce_frame(_resource(), pd.DataFrame({"_row": [1], "born": ["1066-10-14"]}))
    assert typed["born"].iloc[0] == pd.Timestamp("1066-10-14") and not failed["born"].any()
