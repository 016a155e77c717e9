"""Cross-resource checks, run in the warehouse after the loads (scope ``warehouse``).

"Every ID in a marriage record exists in the household register", "every licence holder
exists in the population or legal-entity library": the referenced data comes from another
unit's run, so these checks cannot run on one staged delivery. They run once per data
interval after the base libraries are built (the ``cross_checks`` task of the publish DAG,
before publishing, so the rows they flag are flagged in the share area), each as a Great
Expectations ``UnexpectedRowsExpectation`` on GX's SQL engine against the warehouse itself
(SQLite with its attached areas, or PostgreSQL): the anti-join runs in the database, which
scales to the whole ods table.

GX's verdict and count come from the expectation; the failing keys, uncapped, come from
running the very same query (GX returns at most 200 rows), which is also stored as the
query that reproduces them. Results go where the delivery checks' go: ``check_results``
(for the resource's run of the interval), ``check_runs``, ``check_failures``, and the
resource's tickets are updated from them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from datarail.privacy import mask_record, mask_value, scrub_text
from quality.suite import SAMPLE_SIZE_DEFAULT, CheckSpec, warehouse_specs
from warehouse.load import insert_check_results

if TYPE_CHECKING:
    from catalog.models import Catalog, Resource
    from datarail.interval import Interval

log = logging.getLogger(__name__)
_KEY, _REF = "_dr_key", "_dr_ref"
_LOCK = threading.Lock()


def _gx_datasource(engine: sa.Engine):
    """A fresh GX SQL datasource on the warehouse (caller deletes it). On SQLite its
    connections attach the same area files the warehouse engine attaches."""
    from quality.validate import _GX_STATE, gx_batch_definition

    gx_batch_definition()  # builds the quiet, cached context
    ctx = _GX_STATE["context"]
    name = f"warehouse_{uuid.uuid4().hex[:8]}"
    if engine.dialect.name == "sqlite":
        from warehouse.engine import AREAS

        main = Path(engine.url.database)

        def creator():
            con = sqlite3.connect(str(main), check_same_thread=False)
            con.execute("PRAGMA busy_timeout = 30000")
            for area in AREAS:
                con.execute("ATTACH DATABASE ? AS " + area, (str(main.parent / f"{area}.sqlite"),))
            return con

        ds = ctx.data_sources.add_sqlite(name, connection_string=f"sqlite:///{main}", kwargs={"creator": creator})
    else:
        ds = ctx.data_sources.add_postgres(name, connection_string=engine.url.render_as_string(hide_password=False))
    return ctx, ds


def _quote(engine: sa.Engine, *parts: str) -> str:
    prep = engine.dialect.identifier_preparer
    return ".".join(prep.quote(p) for p in parts)


def _queries(engine: sa.Engine, resource: Resource, spec: CheckSpec) -> tuple[str, str, str]:
    """(GX asset query, GX unexpected-rows query, the reproducing query for people).

    Identifiers come from the validated catalog (lower snake case) and are quoted anyway;
    there are no values to bind."""
    p = spec.params
    table = _quote(engine, "ods", resource.table)
    ref = _quote(engine, p["ref_schema"], p["ref_table"])
    ref_col = _quote(engine, p["ref_column"])
    field = _quote(engine, spec.fields[0])
    pk = [_quote(engine, k) for k in resource.primary_key]
    key_expr = pk[0] if len(pk) == 1 else " || '|' || ".join(pk)
    asset = f"SELECT {key_expr} AS {_KEY}, {field} AS {_REF} FROM {table}"
    # Distinct column names in the batch, so the correlated reference cannot bind to a
    # column of the referenced table.
    unexpected = (f"SELECT {_KEY}, {_REF} FROM {{batch}} WHERE {_REF} IS NOT NULL AND NOT EXISTS "
                  f"(SELECT 1 FROM {ref} AS r WHERE r.{ref_col} = {_REF})")
    cols = ", ".join([*pk, f"t.{field}"] if spec.fields[0] not in resource.primary_key else pk)
    reproduce = (f"SELECT {cols} FROM {table} AS t WHERE t.{field} IS NOT NULL AND NOT EXISTS "
                 f"(SELECT 1 FROM {ref} AS r WHERE r.{ref_col} = t.{field}) ORDER BY {', '.join(pk)}")
    return asset, unexpected, reproduce


def _table_exists(engine: sa.Engine, schema: str, table: str) -> bool:
    return sa.inspect(engine).has_table(table, schema=schema)


def run_cross_checks(engine: sa.Engine, catalog: Catalog, interval: Interval) -> dict:
    """Run every warehouse check of every active resource delivered in ``interval``; store
    results and evidence; update the tickets. Returns {resource: {check_id: failed}}."""
    from quality.evidence import record_evidence
    from quality.tickets import update_tickets

    out: dict[str, dict[str, int]] = {}
    with _LOCK:
        ctx = ds = None
        try:
            for resource in catalog.resources:
                if resource.status != "active":
                    continue
                specs = warehouse_specs(resource, catalog)
                if not specs:
                    continue
                with engine.connect() as conn:
                    delivered = conn.execute(sa.text(
                        "SELECT 1 FROM meta.runs WHERE resource = :r AND interval_key = :k AND status = 'loaded'"),
                        {"r": resource.code, "k": interval.key}).first()
                if not delivered or not _table_exists(engine, "ods", resource.table):
                    continue  # results belong to a run of this interval; none here
                if ds is None:
                    ctx, ds = _gx_datasource(engine)
                results, evidence = [], []
                for spec in specs:
                    if not _table_exists(engine, spec.params["ref_schema"], spec.params["ref_table"]):
                        log.warning("%s %s: %s.%s does not exist yet: not checked", resource.code, spec.check_id,
                                    spec.params["ref_schema"], spec.params["ref_table"])
                        continue
                    result, keys = _run_one(engine, ds, resource, spec)
                    results.append(result)
                    evidence.append(keys)
                if not results:
                    continue
                _store(engine, resource, interval, results)
                import pandas as pd

                frame = pd.DataFrame([{"check_id": r["check_id"], "_row": i + 1, "key": k}
                                      for r, keys in zip(results, evidence, strict=True)
                                      for i, k in enumerate(keys)], columns=["check_id", "_row", "key"])
                record_evidence(engine, resource, interval, results, frame)
                update_tickets(engine, catalog, resource.code, interval, check_ids=[r["check_id"] for r in results])
                out[resource.code] = {r["check_id"]: r["failed"] for r in results}
        finally:
            if ds is not None:
                ctx.data_sources.delete(ds.name)
    log.info("cross-resource checks [%s]: %s", interval.key, out)
    return out


def _run_one(engine: sa.Engine, ds, resource: Resource, spec: CheckSpec) -> tuple[dict, list[str]]:
    """Run one warehouse check through GX; returns (check dict, raw failing keys)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    asset_sql, unexpected_sql, reproduce = _queries(engine, resource, spec)
    asset = ds.add_query_asset(f"{resource.table}_{spec.fields[0]}", query=asset_sql)
    suite = gx.ExpectationSuite(name=f"datarail_{resource.code}_{spec.check_id}")
    meta = {"check_id": spec.check_id, "severity": spec.severity, "kind": spec.kind, "field": spec.field}
    suite.add_expectation(gxe.UnexpectedRowsExpectation(
        unexpected_rows_query=unexpected_sql, meta=meta,
        severity="critical" if spec.severity == "blocking" else "warning",
        description=f"{spec.check_id}: {spec.rule}"))
    batch = asset.add_batch_definition_whole_table("all").get_batch()
    result = batch.validate(suite, result_format="SUMMARY").results[0]
    info = result.exception_info or {}
    if info.get("raised_exception"):
        from quality.validate import ValidationError

        raise ValidationError(f"{spec.check_id} raised in GX: {scrub_text(str(info.get('exception_message')))}",
                              resource=resource.code, field=spec.fields[0])
    gx_failed = int(result.result.get("observed_value") or 0)
    pk = list(resource.primary_key)
    with engine.connect() as conn:
        evaluated = conn.execute(sa.text(f"SELECT COUNT(*) FROM {_quote(engine, 'ods', resource.table)}")).scalar_one()
        rows = [dict(r._mapping) for r in conn.execute(sa.text(reproduce))]
    if len(rows) != gx_failed:  # the same query twice: only a concurrent load could differ
        log.warning("%s %s: GX counted %d failing rows, the reproducing query %d", resource.code, spec.check_id,
                    gx_failed, len(rows))
    keys = [json.dumps([None if r[k] is None else str(r[k]) for k in pk], ensure_ascii=False) for r in rows]
    waived = _waivers(engine, resource.code, spec.check_id)
    if waived:
        keep = [k not in waived for k in keys]
        rows, keys = [r for r, ok in zip(rows, keep, strict=True) if ok], [k for k in keys if k not in waived]
    n_waived = gx_failed - len(rows) if waived else 0
    masked = [json.dumps([mask_value(resource.field(k).semantic, r[k] if r[k] is None else str(r[k]))
                          for k in pk], ensure_ascii=False) for r in rows]
    sample = _sample(engine, resource, rows[:SAMPLE_SIZE_DEFAULT])
    return ({"check_id": spec.check_id, "kind": spec.kind, "field": spec.field, "severity": spec.severity,
             "rule": spec.rule, "evaluated": int(evaluated), "failed": len(rows), "scope": "warehouse",
             "expectation": result.expectation_config.type, "waived": max(n_waived, 0), "observed": gx_failed,
             "failed_keys": masked, "sample": sample, "reproduce_sql": reproduce}, keys)


def _waivers(engine: sa.Engine, resource: str, check_id: str) -> frozenset[str]:
    with engine.connect() as conn:
        return frozenset(r[0] for r in conn.execute(sa.text(
            "SELECT row_key FROM quality.waivers WHERE resource = :r AND check_id = :c"), {"r": resource, "c": check_id}))


def _sample(engine: sa.Engine, resource: Resource, rows: list[dict]) -> list[dict]:
    """Up to five failing ods rows, masked."""
    if not rows:
        return []
    pk = list(resource.primary_key)
    names = [f.name for f in resource.fields]
    table = sa.table(resource.table, *[sa.column(n) for n in names], schema="ods")
    out = []
    with engine.connect() as conn:
        for r in rows:
            cond = sa.and_(*[table.c[k] == r[k] for k in pk])
            rec = conn.execute(sa.select(*[table.c[n] for n in names]).where(cond)).mappings().first()
            if rec:
                out.append(mask_record(resource, {k: (None if v is None else str(v)) for k, v in rec.items()}))
    return out


def _store(engine: sa.Engine, resource: Resource, interval: Interval, results: list[dict]) -> None:
    """Replace these checks' rows of ``quality.check_results`` for the interval."""
    params = {"r": resource.code, "k": interval.key}
    with engine.begin() as conn:
        for c in results:
            conn.execute(sa.text("DELETE FROM quality.check_results WHERE resource = :r AND interval_key = :k "
                                 "AND check_id = :c"), {**params, "c": c["check_id"]})
        insert_check_results(conn, resource.code, interval.key, results)
