"""Identifier rules: GB 11643 resident IDs, GB 32100 credit codes, phone numbers."""

from __future__ import annotations

import random
from datetime import date

import pandas as pd
import pytest
from stdnum.cn import ric, uscc

from quality.divisions import load_divisions
from quality.identifiers import (
    make_resident_id,
    make_uscc,
    org_code_check_char,
    phone_problem,
    phone_problems,
    resident_id_check_char,
    resident_id_problem,
    resident_id_problems,
    uscc_problem,
    uscc_problems,
)

pytestmark = pytest.mark.unit

RUN = date(2025, 1, 1)
DIVS = load_divisions()


def _with_check(first17: str) -> str:
    """Complete 17 digits with the check digit computed by python-stdnum, independently of
    the code under test (stdnum's function ignores the last character it is given)."""
    return first17 + ric.calc_check_digit(first17 + "0")


# --- resident IDs -------------------------------------------------------------------------------

VALID_IDS = [
    "11010519491231002X",  # the worked example of GB 11643-1999 (check character X)
    _with_check("33010219900101123"),
    _with_check("33010620000229001"),  # born on a leap day (2000)
    _with_check("33010219900101124"),
]


@pytest.mark.parametrize("value", VALID_IDS)
def test_valid_resident_ids(value):
    assert ric.calc_check_digit(value) == value[-1]  # stdnum agrees the check character is right
    assert resident_id_problem(value, run_date=RUN, divisions=DIVS) is None


INVALID_IDS = [
    (VALID_IDS[1][:17] + ("0" if VALID_IDS[1][17] != "0" else "1"), "check character"),
    ("11010519491231002x", "characters"),  # lower-case x is not the GB 11643 check character
    (_with_check("33010219900230123"), "birth date"),  # 1990-02-30
    (_with_check("33010219900001123"), "birth date"),  # month 00
    (_with_check("33010620010229001"), "birth date"),  # 2001 is not a leap year
    (_with_check("33010218500101123"), "birth date"),  # before 1880
    (_with_check("33010220250102123"), "birth date in the future"),  # day after the run date
    (_with_check("99999919900101123"), "birthplace code unknown"),
    (VALID_IDS[1][:17], "length"),  # 17 characters
    (VALID_IDS[1] + "0", "length"),
    ("33010219900101A23X", "characters"),
    ("３30102199001011234", "characters"),  # full-width digit
]


@pytest.mark.parametrize(("value", "reason"), INVALID_IDS)
def test_invalid_resident_ids(value, reason):
    assert resident_id_problem(value, run_date=RUN, divisions=DIVS) == reason


def test_birth_on_the_run_date_is_not_in_the_future():
    value = _with_check("33010220250101123")
    assert resident_id_problem(value, run_date=RUN, divisions=DIVS) is None
    assert resident_id_problem(value, run_date=date(2024, 12, 31), divisions=DIVS) == "birth date in the future"


def test_null_has_no_problem():
    assert resident_id_problem(None, run_date=RUN) is None


@pytest.mark.parametrize(("value", "policy", "reason"), [
    # 330103 下城区 was valid 1983-2021: known historically, not current
    (_with_check("33010319900101123"), "historic", None),
    (_with_check("33010319900101123"), "current", "birthplace code unknown"),
    (_with_check("33010319900101123"), "at_year", None),
    # 330102 上城区 is listed from 1983: someone born in 1950 there fails "at_year"
    (_with_check("33010219500101123"), "at_year", "birthplace code unknown"),
    (_with_check("33010219500101123"), "current", None),
    # the GB 11643 example 440524 潮阳县 (1983-1993), born 1880
    ("440524188001010014", "historic", None),
    ("440524188001010014", "current", "birthplace code unknown"),
])
def test_birthplace_policy(value, policy, reason):
    assert resident_id_problem(value, run_date=RUN, divisions=DIVS, policy=policy) == reason


@pytest.mark.parametrize("policy", ["historic", "current", "at_year"])
def test_vectorised_resident_ids_agree_with_scalar(policy):
    values = [v for v, _ in INVALID_IDS] + VALID_IDS + [None, "440524188001010014",
                                                         _with_check("33010319900101123")]
    # a non-unique, non-range index must not confuse the vectorised form
    series = pd.Series(values, index=[7] * len(values), dtype="str")
    got = resident_id_problems(series, run_date=RUN, divisions=DIVS, policy=policy).tolist()
    want = [resident_id_problem(v, run_date=RUN, divisions=DIVS, policy=policy) for v in values]
    assert got == want


def test_check_character_matches_stdnum_on_many_numbers():
    rng = random.Random(11643)
    for _ in range(300):
        body = "".join(rng.choice("0123456789") for _ in range(17))
        assert resident_id_check_char(body) == ric.calc_check_digit(body + "0")


def test_make_resident_id_is_valid_for_stdnum():
    value = make_resident_id("330106", date(1985, 3, 4), 7)
    assert value.startswith("33010619850304007")
    assert ric.is_valid(value)


# --- unified social credit codes -----------------------------------------------------------------

# Published codes (python-stdnum's test data, "found online"), covering 91/92/12 prefixes,
# MA-style organisation codes, an X organisation check character and an L-prefixed code.
PUBLIC_USCCS = [
    "91110000600037341L", "121200004013590816", "91110000710926094P", "91152201078371135X",
    "9131012056010553X5", "91310115MA1K3BTP2B", "91340600MA2PBM9HXD", "9144030071526726XG",
    "91620105L015101280", "92340603MA2UK2ECXU", "913101127033980359",
]


@pytest.mark.parametrize("value", PUBLIC_USCCS)
def test_public_usccs_are_valid(value):
    assert uscc.is_valid(value)  # independent confirmation
    assert uscc_problem(value) is None


def test_generated_usccs_are_valid():
    value = make_uscc("91", "330100", "MA2B3C4D")
    assert uscc.is_valid(value)
    assert uscc_problem(value) is None


def _recheck(first17: str) -> str:
    return first17 + uscc.calc_check_digit(first17)


BASE = "91110000600037341L"
INVALID_USCCS = [
    *[(BASE[:9] + letter + BASE[10:], "characters") for letter in "IOSVZ"],
    ("91110000600037341N", "check character"),
    (BASE.lower(), "characters"),
    (BASE[:17], "length"),
    ("9111000060003IOZSV", "characters"),
    ("91A10000600037341L", "characters"),  # division part must be digits
    # organisation code 60003734 has check 1; 2 there (with a recomputed final check) fails GB 11714
    (_recheck("91110000600037342"), "organisation code check character"),
]


@pytest.mark.parametrize(("value", "reason"), INVALID_USCCS)
def test_invalid_usccs(value, reason):
    assert uscc_problem(value) == reason


def test_org_code_check_known_value():
    # GB 11714 over 60003734: 6*3 + 0 + 0 + 0 + 3*5 + 7*8 + 3*4 + 4*2 = 109; 11 - 109 % 11 = 1
    assert org_code_check_char("60003734") == "1"


def test_vectorised_usccs_agree_with_scalar():
    values = PUBLIC_USCCS + [v for v, _ in INVALID_USCCS] + [None]
    got = uscc_problems(pd.Series(values, dtype="str")).tolist()
    assert got == [uscc_problem(v) for v in values]


# --- phones -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "ok"), [
    ("13812345678", True), ("19912345678", True), ("0571-88889999", True), ("057188889999", True),
    ("010-1234567", True), ("12812345678", False), ("1381234567", False), ("138123456789", False),
    ("+8613812345678", False), ("88889999", False), ("0571-888", False), (None, True),
])
def test_phone(value, ok):
    assert (phone_problem(value) is None) is ok
    assert (phone_problems(pd.Series([value], dtype="str")).iloc[0] is None) is ok
