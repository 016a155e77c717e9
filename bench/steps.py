"""One measured step of the benchmark, run in its own process by ``bench/run.py``
(``python -m bench.steps STEP ...``) so that its wall time and peak RSS are its own.

Each step prints one JSON line on stdout: ``{"step": ..., "in_process_s": ..., ...}``
(``in_process_s``: the step's work after imports, for the incremental ratio).

Steps:

- ``datarail``: the project's real path, ``datarail.pipeline.extract`` (connectorx ->
  Arrow -> staged Parquet) then ``warehouse.load.load_delivery`` with every staged row as
  passed (no validation), streamed from the staged Parquet parts: (a).
- ``datarail_extract``: ``datarail.pipeline.extract`` alone (extract -> stage), for the
  extraction's own time and memory.
- ``datarail_validated``: ``pipeline.extract`` -> ``pipeline.validate`` (Great Expectations)
  -> ``pipeline.load``: (b), what the DAG runs.
- ``pandas``: naive ``pandas.read_sql(chunksize=100_000)`` + ``DataFrame.to_sql``: (d).
- ``dlt``: ``dlt`` ``sql_database`` (connectorx backend, every other setting default) ->
  postgres: (e).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time


def _interval(day: str):
    from datetime import date

    from datarail.interval import Interval

    return Interval.daily(date.fromisoformat(day))


def datarail_step(code: str, day: str, conn: dict, *, validate: bool, load: bool = True) -> dict:
    """extract (-> validate) -> load through the project's own code."""
    import pandas as pd

    from datarail import pipeline

    iv = _interval(day)
    s, e = iv.start.isoformat(), iv.end.isoformat()
    t0 = time.perf_counter()
    ext = pipeline.extract(code, s, e, conn=conn, chunk_rows=int(os.environ.get("BENCH_CHUNK_ROWS", "50000")))
    t_ext = time.perf_counter() - t0
    out = {"rows": ext["rows"], "extract_s": round(t_ext, 3), "watermark_before": ext.get("watermark_before"),
           "watermark_after": ext.get("watermark_after"), "staged_bytes": ext["bytes"], "engine": ext.get("engine")}
    if not load:
        return out
    if validate:
        val = pipeline.validate(code, s, e, extract_summary=ext)
        t_val = time.perf_counter()
        loaded = pipeline.load(code, s, e, extract_summary=ext, validate_summary=val, run_id=f"bench_{iv.key}")
        out.update(validate_s=round(t_val - t0 - t_ext, 3), quarantined=loaded["quarantined"])
    else:
        from warehouse.load import load_delivery
        from warehouse.rows import Delivery

        settings, catalog, engine = pipeline.runtime()
        resource = catalog.resource(code)
        passed = Delivery(ext["files"], columns=[f.name for f in resource.fields])
        loaded = load_delivery(engine, resource, interval=iv, run_id=f"bench_{iv.key}", passed=passed,
                               quarantined=pd.DataFrame({"_row": [], "key": [], "reasons": [], "record": []}),
                               checks=[], extracted=ext["rows"], extract_summary=ext,
                               latest_update=ext.get("watermark_after"))
    out.update(loaded=loaded["loaded"], load_s=round(time.perf_counter() - t0 - t_ext - out.get("validate_s", 0), 3))
    return out


def pandas_step(mysql_url: str, pg_url: str) -> dict:
    """read_sql in chunks of 100k rows, each appended with to_sql (pandas' defaults)."""
    import pandas as pd
    import sqlalchemy as sa

    src, dst = sa.create_engine(mysql_url), sa.create_engine(pg_url)
    rows = 0
    with src.connect() as c:
        for chunk in pd.read_sql("SELECT * FROM population", c, chunksize=100_000):
            chunk.to_sql("population", dst, schema="pandas_bench", if_exists="append", index=False)
            rows += len(chunk)
    return {"rows": rows}


def dlt_step(mysql_url: str, pg_url: str, workdir: str) -> dict:
    """dlt sql_database -> postgres; connectorx backend, otherwise dlt's defaults."""
    os.environ.setdefault("DLT_DATA_DIR", workdir)
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    import dlt
    from dlt.sources.sql_database import sql_database

    source = sql_database(credentials=mysql_url, table_names=["population"], backend="connectorx")
    pipe = dlt.pipeline(pipeline_name="datarail_bench", destination=dlt.destinations.postgres(credentials=pg_url),
                        dataset_name="dlt_bench", pipelines_dir=workdir)
    info = pipe.run(source)
    with pipe.sql_client() as client:
        rows = client.execute_sql("SELECT COUNT(*) FROM population")[0][0]
    return {"rows": int(rows), "loads": len(info.loads_ids)}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    step = argv[0]
    t0 = time.perf_counter()
    if step in ("datarail", "datarail_validated", "datarail_extract"):
        out = datarail_step(argv[1], argv[2], json.loads(argv[3]), validate=step == "datarail_validated",
                            load=step != "datarail_extract")
    elif step == "pandas":
        out = pandas_step(argv[1], argv[2])
    elif step == "dlt":
        out = dlt_step(argv[1], argv[2], argv[3])
    else:
        raise SystemExit(f"unknown step {step}")
    out.update(step=step, in_process_s=round(time.perf_counter() - t0, 3))
    sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
