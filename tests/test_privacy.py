"""Personal-data masking: exact outputs, free-text scrubbing and the logging filter."""

from __future__ import annotations

import io
import logging

import pytest

from catalog.models import Field, Resource
from datarail.privacy import (
    MaskingFilter,
    find_unmasked,
    install_masking_filter,
    mask_name,
    mask_phone,
    mask_record,
    mask_resident_id,
    mask_value,
    scrub_text,
)

pytestmark = pytest.mark.unit

RID = "33010219900101123X"


def _resource() -> Resource:
    return Resource(
        code="RK-GA-0001", table="household_register", name_zh="户籍人口信息", name_en="Household register",
        unit="psb", system="huji", location={"table": "t_hjrk"}, update_cycle="daily",
        sharing={"type": "unconditional"}, primary_key=("resident_id",),
        fields=(Field(name="resident_id", semantic="resident_id"), Field(name="name", semantic="person_name"),
                Field(name="phone", semantic="phone"), Field(name="address", semantic="address"),
                Field(name="email", semantic="email"), Field(name="gender"),
                Field(name="uscc", semantic="uscc"), Field(name="remarks", semantic="text")))


@pytest.mark.parametrize(("fn", "value", "masked"), [
    (mask_resident_id, RID, "330102********123X"),
    (mask_resident_id, "330102199001011234", "330102********1234"),
    (mask_phone, "13812345678", "138****5678"),
    (mask_phone, "0571-88889999", "057******9999"),
    (mask_name, "张三", "张*"),
    (mask_name, "欧阳娜娜", "欧***"),
    (mask_name, "张", "*"),
    (mask_resident_id, None, None),
    (mask_phone, None, None),
    (mask_name, None, None),
    (mask_resident_id, float("nan"), None),
])
def test_mask_functions(fn, value, masked):
    assert fn(value) == masked


def test_short_values_keep_less():
    # a 10-character "ID" must not come back mostly readable
    masked = mask_resident_id("3301021990")
    assert masked.count("*") >= 4 and len(masked) == 10


@pytest.mark.parametrize(("semantic", "value", "masked"), [
    ("resident_id", RID, "330102********123X"),
    ("phone", "13812345678", "138****5678"),
    ("person_name", "欧阳娜娜", "欧***"),
    ("address", "浙江省杭州市上城区解放路1号", "浙江省杭州市***"),
    ("email", "zhangsan@example.gov.cn", "z***@example.gov.cn"),
    ("gender", "男", "男"),
    (None, "anything", "anything"),
    ("resident_id", None, None),
])
def test_mask_value_dispatches_by_semantic(semantic, value, masked):
    assert mask_value(semantic, value) == masked


def test_mask_record_masks_personal_fields_and_scrubs_the_rest():
    record = {"_row": 3, "resident_id": RID, "name": "张三", "phone": "13812345678",
              "address": "浙江省杭州市上城区解放路1号", "email": "zhangsan@example.gov.cn", "gender": "女",
              "uscc": "911100006000373410", "remarks": f"补录 {RID}", "_source": "table t_hjrk"}
    assert mask_record(_resource(), record) == {
        "_row": 3, "resident_id": "330102********123X", "name": "张*", "phone": "138****5678",
        "address": "浙江省杭州市***", "email": "z***@example.gov.cn", "gender": "女",
        "uscc": "911100006000373410",  # a company code, not personal: left alone
        "remarks": "补录 330102********123X", "_source": "table t_hjrk"}
    assert record["resident_id"] == RID  # the input is not modified


def test_scrub_text_on_mixed_text():
    text = (f"身份证号{RID}，手机 13812345678; 另一号码+8613912345678 或 139-1234-5678。"
            "订单 12345678901234567890123 与 电话 0571-88889999、信用代码 913101127033980359 保留")
    assert scrub_text(text) == (
        "身份证号330102********123X，手机 138****5678; 另一号码+86139****5678 或 139******5678。"
        "订单 12345678901234567890123 与 电话 0571-88889999、信用代码 913101127033980359 保留")
    assert scrub_text(None) is None


@pytest.mark.parametrize("value", [
    "33010219900230123X",  # impossible birth date: still someone's (mistyped) ID
    "330102199001011230",  # wrong check character: still personal
    "110105194912310021",
])
def test_scrub_catches_imperfect_ids(value):
    assert scrub_text(f"id:{value}.") == f"id:{value[:6]}********{value[-4:]}."


@pytest.mark.parametrize("value", ["913101127033980359", "121200004013590816", "923304117374967259"])
def test_all_digit_credit_codes_are_not_taken_for_ids(value):
    assert scrub_text(value) == value and find_unmasked(value) == []


def test_find_unmasked():
    text = f"a {RID} b 13812345678 c 330102********123X d 138****5678"
    assert find_unmasked(text) == [RID, "13812345678"]
    assert find_unmasked(scrub_text(text)) == []
    assert find_unmasked("") == []


def test_masking_filter_scrubs_messages_args_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("datarail.test_privacy")
    logger.propagate = False
    logger.addHandler(handler)
    install_masking_filter(logger)
    install_masking_filter(logger)  # idempotent
    assert sum(isinstance(f, MaskingFilter) for f in handler.filters) == 1
    try:
        logger.warning("row with id %s and phone %s", RID, "13812345678")
        try:
            raise ValueError(f"bad id {RID}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "330102********123X" in out and "138****5678" in out
    assert "bad id 330102********123X" in out  # the traceback went through the filter too
    assert find_unmasked(out) == []
