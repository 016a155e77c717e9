"""The oracle's rules, one reason and one precedence at a time, on tiny inline catalogs."""

from __future__ import annotations

import pytest
from oracle import (
    expected_conflict_checks,
    expected_conflicts,
    expected_metrics,
    expected_need_status,
    resource_reason,
    unmet_by_reason,
)

from catalog.models import (
    Catalog,
    Field,
    Location,
    Need,
    Resource,
    Responsibility,
    ServiceItem,
    Sharing,
    System,
    Unit,
)

pytestmark = pytest.mark.unit


def _unit(code: str) -> Unit:
    return Unit(code=code, name_zh=code, name_en=code, contact_email=f"data-{code}@example.gov.cn",
                region="330000", systems=(System(code="sys", name="sys", kind="sql", conn_id=f"c_{code}"),))


def _res(code: str, *, unit: str = "psb", sharing: str = "unconditional", granted: tuple[str, ...] = (),
         status: str = "active") -> Resource:
    condition = None if sharing == "unconditional" else "依申请共享"
    return Resource(code=code, table=code.lower().replace("-", "_"), name_zh=code, name_en=code, unit=unit,
                    system="sys", location=Location(table="t"), fields=(Field(name="id"),),
                    primary_key=("id",), update_cycle="daily", status=status,
                    sharing=Sharing(type=sharing, condition=condition, granted_to=granted))


def _catalog(resources: list[Resource], needs: list[tuple[str, ...]], handling_unit: str = "zwfw",
             responsibilities: tuple[Responsibility, ...] = ()) -> Catalog:
    item = ServiceItem(code="SX-0001", name_zh="事项", name_en="item", handling_unit=handling_unit,
                       needs=tuple(Need(code=f"SX-0001-N{i + 1:02d}", material_zh="材料", resources=r)
                                   for i, r in enumerate(needs)))
    return Catalog(units=tuple(_unit(c) for c in ("psb", "hpf", "zwfw", "tax")), resources=tuple(resources),
                   responsibilities=responsibilities, items=(item,))


def _manifest(**entries: dict) -> dict:
    """Manifest keyed by resource code, written with underscores for dashes (RK_A -> RK-A)."""
    return {"resources": {k.replace("_", "-"): v for k, v in entries.items()}}


GOOD = {"rows": 100, "quarantined": 0, "stale": False}


@pytest.mark.parametrize("resource, entry, expected", [
    pytest.param(_res("RK-A"), GOOD, None, id="usable"),
    pytest.param(_res("RK-A"), None, "not_delivered", id="absent-from-manifest"),
    pytest.param(_res("RK-A"), {"rows": 0, "quarantined": 0, "stale": False}, "not_delivered", id="zero-rows"),
    pytest.param(_res("RK-A", status="planned"), GOOD, "not_delivered", id="planned"),
    pytest.param(_res("RK-A", sharing="not_shared"), GOOD, "not_shared", id="not-shared"),
    pytest.param(_res("RK-A", sharing="conditional", granted=("hpf",)), GOOD, "not_granted", id="not-granted"),
    pytest.param(_res("RK-A", sharing="conditional", granted=("zwfw",)), GOOD, None, id="granted"),
    pytest.param(_res("RK-A", unit="zwfw", sharing="conditional"), GOOD, None, id="own-unit"),
    pytest.param(_res("RK-A"), {**GOOD, "stale": True}, "stale", id="stale"),
    pytest.param(_res("RK-A"), {**GOOD, "quarantined": 6}, "failing_quality", id="94pct-fails"),
    pytest.param(_res("RK-A"), {**GOOD, "quarantined": 5}, None, id="95pct-passes"),
])
def test_each_reason(resource, entry, expected):
    manifest = _manifest(RK_A=entry) if entry is not None else _manifest()
    assert resource_reason(resource, "zwfw", manifest) == expected
    status = expected_need_status(_catalog([resource], [("RK-A",)]), manifest)
    assert status[("SX-0001", "SX-0001-N01")] == (expected is None, expected)


@pytest.mark.parametrize("resource, entry, expected", [
    pytest.param(_res("RK-A", status="planned", sharing="not_shared"), {**GOOD, "stale": True},
                 "not_delivered", id="not_delivered-before-not_shared"),
    pytest.param(_res("RK-A", sharing="not_shared"), {**GOOD, "stale": True, "quarantined": 50},
                 "not_shared", id="not_shared-before-stale"),
    pytest.param(_res("RK-A", sharing="conditional", granted=("hpf",)), {**GOOD, "stale": True},
                 "not_granted", id="not_granted-before-stale"),
    pytest.param(_res("RK-A"), {**GOOD, "stale": True, "quarantined": 50},
                 "stale", id="stale-before-failing_quality"),
])
def test_precedence(resource, entry, expected):
    assert resource_reason(resource, "zwfw", _manifest(RK_A=entry)) == expected


def test_no_resource_need():
    status = expected_need_status(_catalog([], [()]), _manifest())
    assert status == {("SX-0001", "SX-0001-N01"): (False, "no_resource")}


@pytest.mark.parametrize("listed, expected", [
    pytest.param(("RK-STALE", "RK-OK"), (True, None), id="any-usable-meets"),
    pytest.param(("RK-STALE", "RK-NS"), (False, "stale"), id="first-listed-reason"),
    pytest.param(("RK-NS", "RK-STALE"), (False, "not_shared"), id="first-listed-reason-reversed"),
])
def test_any_resource_and_first_reason(listed, expected):
    cat = _catalog([_res("RK-STALE"), _res("RK-OK"), _res("RK-NS", sharing="not_shared")], [listed])
    manifest = _manifest(RK_STALE={**GOOD, "stale": True}, RK_OK=GOOD, RK_NS=GOOD)
    assert expected_need_status(cat, manifest)[("SX-0001", "SX-0001-N01")] == expected


def test_threshold_is_a_parameter():
    cat = _catalog([_res("RK-A")], [("RK-A",)])
    manifest = _manifest(RK_A={**GOOD, "quarantined": 10})
    assert expected_need_status(cat, manifest)[("SX-0001", "SX-0001-N01")] == (False, "failing_quality")
    assert expected_need_status(cat, manifest, threshold=0.9)[("SX-0001", "SX-0001-N01")] == (True, None)


def test_metrics_counts_ratio_and_provision():
    resources = [_res("RK-A"), _res("RK-B", unit="hpf"), _res("FR-T", unit="tax", status="planned")]
    resp = (Responsibility(unit="psb", resource="RK-A", cycle="daily"),
            Responsibility(unit="hpf", resource="RK-B", cycle="daily"),
            Responsibility(unit="tax", resource="FR-T", cycle="monthly"))
    cat = _catalog(resources, [("RK-A",), ("RK-B",), ("FR-T",), ()], responsibilities=resp)
    # RK-B delivers but is stale: it still counts as provided, yet does not meet the need.
    manifest = _manifest(RK_A=GOOD, RK_B={**GOOD, "stale": True}, FR_T={**GOOD, "rows": 0})
    metrics = expected_metrics(cat, manifest)
    assert metrics == {"sharing_ratio": 0.25, "items_fully_served": 0, "items_total": 1, "needs_total": 4,
                       "needs_met": 1, "provision_rate": {"psb": 1.0, "hpf": 1.0, "tax": 0.0}}
    assert unmet_by_reason(cat, manifest) == {"stale": 1, "not_delivered": 1, "no_resource": 1}


def test_fully_served_item():
    cat = _catalog([_res("RK-A")], [("RK-A",), ("RK-A",)])
    metrics = expected_metrics(cat, _manifest(RK_A=GOOD))
    assert (metrics["items_fully_served"], metrics["sharing_ratio"]) == (1, 1.0)


# --- cross-source conflicts ---------------------------------------------------------------------

def _conflict_catalog(declared: tuple[str, ...] = ()) -> Catalog:
    register = _res("RK-GA-0001").model_copy(update={"table": "household_register", "authoritative_for": declared})
    card = _res("RK-GA-0002")
    school = _res("RK-JY-0002", unit="hpf")
    return _catalog([register, card, school], [("RK-GA-0001",)])


def _seeded(subject: str, attribute: str, value: str) -> dict:
    return {"library": "population", "attribute": attribute, "field": attribute, "subject": subject,
            "value": value, "was": "x", "key": {"id": subject}}


def test_conflicts_go_to_the_default_register_and_count_subjects_once_per_attribute():
    manifest = _manifest(RK_GA_0001=GOOD,
                         RK_GA_0002={**GOOD, "conflicts": [_seeded("P1", "name", "张叁"), _seeded("P2", "name", "李肆")]},
                         RK_JY_0002={**GOOD, "conflicts": [_seeded("P1", "name", "张三三"),
                                                           _seeded("P1", "birth_date", "2010-01-01")]})
    assert expected_conflicts(_conflict_catalog(), manifest) == {
        ("population", "name", "psb", "RK-GA-0001"): {"conflicts": 3, "subjects": 2},
        ("population", "birth_date", "psb", "RK-GA-0001"): {"conflicts": 1, "subjects": 1}}
    assert expected_conflict_checks(_conflict_catalog(), manifest) == {
        ("RK-GA-0001", "conflict:population.name"): 2, ("RK-GA-0001", "conflict:population.birth_date"): 1}


def test_conflicts_follow_the_catalog_declaration():
    cat = _conflict_catalog()
    school = cat.resource("RK-JY-0002").model_copy(update={"authoritative_for": ("population.birth_date",)})
    cat = cat.model_copy(update={"resources": tuple(school if r.code == school.code else r for r in cat.resources)})
    manifest = _manifest(RK_GA_0001=GOOD, RK_JY_0002=GOOD,
                         RK_GA_0002={**GOOD, "conflicts": [_seeded("P1", "birth_date", "2010-01-02")]})
    assert expected_conflicts(cat, manifest) == {
        ("population", "birth_date", "hpf", "RK-JY-0002"): {"conflicts": 1, "subjects": 1}}


@pytest.mark.parametrize("register, card", [
    pytest.param(None, GOOD, id="authority-not-delivered"),
    pytest.param(GOOD, {"rows": 0, "quarantined": 0, "stale": False}, id="other-source-not-delivered"),
])
def test_no_conflict_without_both_sides(register, card):
    entries = {"RK_GA_0002": {**card, "conflicts": [_seeded("P1", "name", "张叁")]}}
    if register is not None:
        entries["RK_GA_0001"] = register
    assert expected_conflicts(_conflict_catalog(), _manifest(**entries)) == {}
