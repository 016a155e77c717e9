"""The demo catalog loads and is shaped as designed; the loader's errors say where the problem is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from oracle import expected_metrics, unmet_by_reason

from catalog import load_catalog
from datarail.errors import CatalogError

pytestmark = pytest.mark.unit

DEMO = Path(__file__).resolve().parent.parent / "catalog" / "demo"


@pytest.fixture(scope="module")
def demo():
    return load_catalog(DEMO)


def test_demo_catalog_sizes(demo):
    assert len(demo.source_units) >= 6
    assert len(demo.resources) >= 12
    assert len(demo.items) >= 20
    assert len(demo.needs) >= 60


def test_need_codes_belong_to_their_item(demo):
    codes = [need.code for _, need in demo.needs]
    assert len(codes) == len(set(codes))
    for item, need in demo.needs:
        assert need.code.startswith(f"{item.code}-N"), need.code


def test_some_needs_have_no_resource_by_design(demo):
    # The province has no real-estate resource (自然资源厅 has no system): these stay unmet.
    empty = [need for _, need in demo.needs if not need.resources]
    assert empty
    assert any("不动产" in need.material_zh for need in empty)
    assert all(demo.resource(code) for _, need in demo.needs for code in need.resources)


def test_responsibility_list_covers_every_resource_once(demo):
    listed = [(r.unit, r.resource, r.cycle) for r in demo.responsibilities]
    expected = sorted((r.unit, r.code, r.update_cycle) for r in demo.resources)
    assert sorted(listed) == expected
    assert any(demo.resource(code).status == "planned" for _, code, _ in listed)


def _spec_manifest(catalog) -> dict:
    """Every active resource delivers 100 clean, fresh rows, except SPEC's designed faults."""
    manifest = {"resources": {r.code: {"rows": 100, "quarantined": 0, "stale": False}
                              for r in catalog.resources if r.status == "active"}}
    manifest["resources"]["RK-RS-0002"]["stale"] = True
    manifest["resources"]["RK-JY-0002"]["quarantined"] = 12
    return manifest


def test_demo_sharing_is_realistic_and_shows_every_reason(demo):
    manifest = _spec_manifest(demo)
    metrics = expected_metrics(demo, manifest)
    assert 0.65 <= metrics["sharing_ratio"] <= 0.85
    assert 0 < metrics["items_fully_served"] < metrics["items_total"]
    assert set(unmet_by_reason(demo, manifest)) == {
        "no_resource", "not_delivered", "not_shared", "not_granted", "stale", "failing_quality"}
    assert metrics["provision_rate"]["tax"] < 1.0
    # the numbers catalog/README.md quotes
    assert (metrics["needs_met"], metrics["needs_total"], metrics["items_fully_served"], metrics["items_total"]) == (
        109, 147, 18, 41)


def test_registers_are_declared_authoritative_and_credit_has_a_source(demo):
    for attr in ("name", "gender", "birth_date", "address"):
        assert demo.authority(f"population.{attr}").code == "RK-GA-0001"
    for attr in ("name", "legal_rep_name", "address"):
        assert demo.authority(f"legal_entity.{attr}").code == "FR-SC-0001"
    credit = [r for r in demo.resources if r.base_library == "credit"]
    assert [(r.code, r.unit, r.status) for r in credit] == [("FR-FG-0001", "drc", "active")]
    assert any("FR-FG-0001" in need.resources for _, need in demo.needs)


# --- loader errors -------------------------------------------------------------------------

def _minimal() -> dict[str, dict]:
    """A valid one-unit catalog as {relative file: YAML document}."""
    resource = {
        "code": "RK-GA-0001", "table": "household_register", "name_zh": "户籍人口信息",
        "name_en": "Household register", "unit": "psb", "system": "huji", "location": {"table": "t_hjrk"},
        "fields": [{"name": "resident_id", "semantic": "resident_id", "required": True},
                   {"name": "name_zh", "semantic": "person_name"}],
        "primary_key": ["resident_id"], "update_cycle": "daily",
        "sharing": {"type": "conditional", "condition": "仅用于政务服务办理", "granted_to": ["zwfw"]},
    }
    return {
        "units.yaml": {"units": [
            {"code": "psb", "name_zh": "省公安厅", "name_en": "Public Security", "region": "330000",
             "contact_email": "data-psb@example.gov.cn",
             "systems": [{"code": "huji", "name": "户籍系统", "kind": "sql", "conn_id": "sandbox_psb_huji"}]},
            {"code": "zwfw", "name_zh": "省政务服务中心", "name_en": "Service Centre", "region": "330000",
             "contact_email": "data-zwfw@example.gov.cn"}]},
        "resources/psb.yaml": {"resources": [resource]},
        "responsibilities.yaml": {"responsibilities": [
            {"unit": "psb", "resource": "RK-GA-0001", "cycle": "daily"}]},
        "items/population.yaml": {"items": [
            {"code": "SX-0001", "name_zh": "户籍证明开具", "name_en": "Hukou certificate", "handling_unit": "zwfw",
             "needs": [{"code": "SX-0001-N01", "material_zh": "户籍信息", "resources": ["RK-GA-0001"]}]}]},
    }


def _write(root: Path, docs: dict[str, dict | str]) -> None:
    for rel, doc in docs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, allow_unicode=True),
                        encoding="utf-8")


def test_minimal_catalog_loads(tmp_path):
    _write(tmp_path, _minimal())
    cat = load_catalog(tmp_path)
    assert [r.code for r in cat.resources] == ["RK-GA-0001"]
    assert cat.items[0].needs[0].resources == ("RK-GA-0001",)


def _res0(d):
    return d["resources/psb.yaml"]["resources"][0]


def _item0(d):
    return d["items/population.yaml"]["items"][0]


def _unknown_unit(d):
    _res0(d)["unit"] = "xyz"


def _pk_not_field(d):
    _res0(d)["primary_key"] = ["cert_no"]


def _bad_identifier(d):
    _res0(d)["fields"][1]["name"] = "Name-Zh"


def _conditional_without_condition(d):
    del _res0(d)["sharing"]["condition"]


def _duplicate_code(d):
    d["items/social.yaml"] = {"items": [dict(_item0(d))]}


def _unknown_need_resource(d):
    _item0(d)["needs"][0]["resources"] = ["RK-XX-9999"]


def _invalid_yaml(d):
    d["items/population.yaml"] = "items:\n  - code: SX-0001\n    needs: [unclosed\n"


def _bad_field_type(d):
    _res0(d)["fields"][0]["type"] = "varchar"


def _unknown_handling_unit(d):
    _item0(d)["handling_unit"] = "nobody"


def _unknown_grantee(d):
    _res0(d)["sharing"]["granted_to"] = ["zwfw", "nobody"]


@pytest.mark.parametrize("mutate, file, entry, field", [
    pytest.param(_unknown_unit, "resources/psb.yaml", "RK-GA-0001", "unit", id="unknown-unit"),
    pytest.param(_pk_not_field, "resources/psb.yaml", "RK-GA-0001", "primary_key", id="pk-not-a-field"),
    pytest.param(_bad_identifier, "resources/psb.yaml", "RK-GA-0001", "fields.Name-Zh.name", id="bad-identifier"),
    pytest.param(_conditional_without_condition, "resources/psb.yaml", "RK-GA-0001", "sharing",
                 id="conditional-without-condition"),
    pytest.param(_duplicate_code, "items/social.yaml", "SX-0001", "code", id="duplicate-code"),
    pytest.param(_unknown_need_resource, "items/population.yaml", "SX-0001", "needs.SX-0001-N01.resources",
                 id="need-names-unknown-resource"),
    pytest.param(_invalid_yaml, "items/population.yaml", None, None, id="invalid-yaml"),
    pytest.param(_bad_field_type, "resources/psb.yaml", "RK-GA-0001", "fields.resident_id.type",
                 id="bad-field-type"),
    pytest.param(_unknown_handling_unit, "items/population.yaml", "SX-0001", "handling_unit",
                 id="unknown-handling-unit"),
    pytest.param(_unknown_grantee, "resources/psb.yaml", "RK-GA-0001", "sharing.granted_to",
                 id="unknown-grantee"),
])
def test_loader_error_names_file_entry_and_field(tmp_path, mutate, file, entry, field):
    docs = _minimal()
    mutate(docs)
    _write(tmp_path, docs)
    with pytest.raises(CatalogError) as info:
        load_catalog(tmp_path)
    text = str(info.value)
    assert str(tmp_path / file) in text
    assert info.value.file == str(tmp_path / file)
    if entry is not None:
        assert f"entry {entry}" in text
    if field is not None:
        assert field in text
    else:
        assert "not valid YAML" in text and "line" in text
