"""Unit tests of the warehouse's building blocks: model headers and templates, dependency
order, the merge statements, canonical row text and hashes, catalog authority declarations."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.dialects import postgresql, sqlite

from datarail.errors import WarehouseError
from tests.helpers import person_resource, tiny_catalog
from warehouse import models as models_module
from warehouse.merge import MergeSQL
from warehouse.models import Renderer, base_models, parse_model
from warehouse.rows import canonical_column, canonical_columns, row_hashes
from warehouse.tables import history_table, ods_table

pytestmark = pytest.mark.unit

MODEL = """-- target: base.people
-- key: resident_id
-- sources: person(resident_id), base.other
-- incremental: no
-- a comment with a :colon that must not become a bind
SELECT {{ pick('name', 'p:person') }}, {{ code('person') }} AS code
FROM {{ source('person') }} p JOIN {{ source('base.other') }} o ON o.id = p.resident_id
WHERE {{ in_scope('p.resident_id') }}
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_parse_model_header(tmp_path):
    m = parse_model(write(tmp_path, "10_people.sql", MODEL))
    assert (m.target, m.key, m.incremental, m.depends) == ("base.people", "resident_id", False, ("base.other",))
    assert [(s.table, s.keys) for s in m.sources] == [("person", ("resident_id",)), ("base.other", ())]
    assert not m.can_increment
    assert m.plan is None
    assert parse_model(write(tmp_path, "11_people.sql", "-- target: base.p\n-- plan: merge\nSELECT 1")).plan == "merge"


@pytest.mark.parametrize("header, message", [
    ("-- sources: person\nSELECT 1", "missing '-- target:'"),
    ("-- target: base.p\n-- plan: hash\nSELECT 1", "the only plan a model may ask for is 'merge'"),
    ("-- target: ods.person\nSELECT 1", "must be base.<name>"),
    ("-- target: quality.conflicts\n-- key: subject_id\nSELECT 1", "needs library, key and attributes"),
])
def test_parse_model_rejects(tmp_path, header, message):
    with pytest.raises(WarehouseError, match=message):
        parse_model(write(tmp_path, "x.sql", header))


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()])
def test_render_full_scoped_and_asof(tmp_path, monkeypatch, dialect):
    cat = tiny_catalog(person_resource())
    m = parse_model(write(tmp_path, "10_people.sql", MODEL))
    other = parse_model(write(tmp_path, "05_other.sql", "-- target: base.other\nWITH x AS (SELECT 1 AS id) SELECT id FROM x"))
    monkeypatch.setattr(models_module, "model_for", lambda t: other)
    full = Renderer(cat, dialect).render(m)
    assert "FROM ods.person p JOIN base.other o" in full and "WHERE 1 = 1" in full
    assert "'RK-T-0001' AS code" in full and "name_src_at" in full and ":colon" not in full
    scoped = Renderer(cat, dialect, scoped=True).render(m)
    assert "p.resident_id IN (SELECT key FROM _scope_keys)" in scoped
    asof = Renderer(cat, dialect, scoped=True, asof=True).render(m)
    assert asof.startswith("WITH asof_person AS NOT MATERIALIZED (SELECT ")
    assert "FROM ods.person_history WHERE _valid_from < :asof_at AND _valid_to >= :asof_at" in asof
    assert "asof_base_other AS NOT MATERIALIZED (WITH x AS (SELECT 1 AS id) SELECT id FROM x)" in asof
    assert "FROM asof_person p JOIN asof_base_other o" in asof


def test_render_key_range_slices(tmp_path):
    """A parallel full build's slice is a plain range on every subject column (bound, never
    formatted in); the first and last slices are open on one side."""
    cat = tiny_catalog(person_resource())
    m = parse_model(write(tmp_path, "10_people.sql", MODEL.replace(", base.other", "").replace(
        "JOIN {{ source('base.other') }} o ON o.id = p.resident_id", "")))
    render = lambda lo, hi: Renderer(cat, postgresql.dialect(), key_range=(lo, hi)).render(m)  # noqa: E731
    assert "WHERE (p.resident_id >= :slice_lo AND p.resident_id < :slice_hi)" in render(True, True)
    assert "WHERE (p.resident_id < :slice_hi)" in render(False, True)
    assert "WHERE (p.resident_id >= :slice_lo)" in render(True, False)
    assert "WHERE 1 = 1" in render(False, False)


def test_render_refuses_unknown_sources_and_bad_scope(tmp_path):
    cat = tiny_catalog(person_resource())
    bad = parse_model(write(tmp_path, "x.sql", "-- target: base.x\nSELECT * FROM {{ source('nope') }}"))
    with pytest.raises(WarehouseError, match="no catalog resource"):
        Renderer(cat, sqlite.dialect()).render(bad)
    bad = parse_model(write(tmp_path, "y.sql", "-- target: base.y\nSELECT 1 WHERE {{ in_scope('1; DROP') }}"))
    with pytest.raises(WarehouseError, match="give a column"):
        Renderer(cat, sqlite.dialect()).render(bad)


def test_demo_models_are_ordered_by_dependency(tmp_path, monkeypatch):
    assert [m.target for m in base_models()].index("base.credit") < [m.target for m in base_models()].index(
        "base.legal_entity")
    (tmp_path / "base").mkdir()
    write(tmp_path / "base", "10_a.sql", "-- target: base.a\n-- sources: base.b\nSELECT 1")
    write(tmp_path / "base", "20_b.sql", "-- target: base.b\n-- sources: base.a\nSELECT 1")
    monkeypatch.setattr(models_module, "SQL_ROOT", tmp_path)
    with pytest.raises(WarehouseError, match="cycle"):
        base_models()


@pytest.mark.parametrize("dialect, fused", [(postgresql.dialect(), True), (sqlite.dialect(), False)])
def test_merge_statements(dialect, fused):
    r = person_resource()
    md = sa.MetaData()
    sql = MergeSQL(r, ods_table(r, md), history_table(r, md), dialect)
    up = sql.upsert()
    assert "ON CONFLICT (resident_id) DO UPDATE SET" in up
    assert "WHERE cur._row_hash <> excluded._row_hash AND cur._valid_from <= excluded._valid_from" in up
    assert "resident_id = excluded" not in up  # the key is never updated
    if fused:
        one = sql.fused(snapshot=True)
        assert one.startswith("WITH late_rerun AS (") and one.count("RETURNING 1") == 8 and ";" not in one
        # keys written without a history row (new, rerun) go to the change journal
        assert f"jr AS ({sql.journal()})" in one
        forward = sql.forward(snapshot=False)
        assert "jr AS (INSERT INTO ods.person_changes (resident_id, _loaded_at) SELECT p.resident_id, p._loaded_at " \
               "FROM probe p WHERE p._prev_ctid IS NULL OR (p._prev__row_hash <> p._row_hash AND " \
               "(p._prev__valid_from < :vf) IS NOT TRUE))" in forward
    # the upsert's own conditions, less the updates that supersede() moves to history
    journal = sql.journal()
    assert journal.startswith("INSERT INTO ods.person_changes (resident_id, _loaded_at) SELECT s.resident_id")
    assert "h._valid_to > :vf" in journal and "o._row_hash <> s._row_hash AND o._valid_from = s._valid_from" in journal


@pytest.mark.parametrize("ftype, values, texts", [
    ("string", ["张三", None, 'a"b\tc'], ["张三", None, 'a"b\tc']),
    ("integer", [12, None, "7"], ["12", None, "7"]),
    ("integer", ["12", "8.0"], ["12", "8"]),
    ("decimal", [1.5, 100.0, None], ["1.5", "100", None]),
    ("decimal", ["1.50", "100"], ["1.5", "100"]),
    ("boolean", [True, False, None], ["true", "false", None]),
    ("date", [date(2018, 5, 16), None], ["2018-05-16", None]),
    ("date", ["2018-05-16", None], ["2018-05-16", None]),
    ("date", [datetime(2018, 5, 16, 8, 30)], ["2018-05-16"]),
    ("datetime", [datetime(2018, 5, 16, 8, 30), None], ["2018-05-16 08:30:00.000000", None]),
    ("datetime", ["2018-05-16 08:30:00"], ["2018-05-16 08:30:00.000000"]),
    ("datetime", ["2018-05-16 08:30:00.5"], ["2018-05-16 08:30:00.500000"]),
])
def test_canonical_text_is_the_same_however_a_value_arrives(ftype, values, texts):
    assert canonical_column(pd.Series(values, dtype=object), ftype).to_pylist() == texts


def test_row_hash_depends_on_values_not_on_their_python_type():
    r = person_resource()
    typed = pd.DataFrame({"resident_id": ["110101199003077777"], "name": ["张三"], "birth_date": [date(1990, 3, 7)],
                          "updated_at": [pd.Timestamp("2026-11-20 08:00:00")]})
    staged = pd.DataFrame({"resident_id": ["110101199003077777"], "name": ["张三"], "birth_date": ["1990-03-07"],
                           "updated_at": ["2026-11-20 08:00:00"]})
    h = canonical_columns(r, typed)["_row_hash"].to_pylist()
    assert h == canonical_columns(r, staged)["_row_hash"].to_pylist() and len(h[0]) == 64
    staged.loc[0, "name"] = None
    assert canonical_columns(r, staged)["_row_hash"].to_pylist() != h
    assert row_hashes([pa.array(["a", None])]) != row_hashes([pa.array(["a", ""])])


def test_bad_value_is_a_typed_error():
    with pytest.raises(WarehouseError, match="does not render as integer"):
        canonical_column(pd.Series(["x1"], dtype=object), "integer", field="n")


def test_one_authority_per_attribute():
    a = person_resource(authoritative_for=["population.name"])
    b = person_resource(code="RK-T-0002", table="person2", authoritative_for=["population.name"])
    with pytest.raises(ValidationError, match="declared authoritative by both"):
        tiny_catalog(a, b)
    with pytest.raises(ValidationError):
        person_resource(authoritative_for=["name"])
    assert tiny_catalog(a).authority("population.name").code == "RK-T-0001"
    assert tiny_catalog(a).authority("population.address") is None


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()])
def test_an_integer_source_key_is_never_generated_by_the_warehouse(dialect):
    from bench.catalog import population_resource  # integer primary key ``id``

    ddl = str(sa.schema.CreateTable(ods_table(population_resource())).compile(dialect=dialect)).upper()
    assert "SERIAL" not in ddl and "AUTOINCREMENT" not in ddl and "IDENTITY" not in ddl
    assert "ID BIGINT NOT NULL" in ddl
