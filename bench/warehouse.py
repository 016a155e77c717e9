"""``make bench`` (warehouse part, issue 4): loads and base-library builds at 5,000,000 rows
on PostgreSQL, through the project's own code paths.

1. Generates, in a throwaway PostgreSQL database ``datarail_bench_wh`` (dropped at the end),
   the ods tables the population library reads, as if delivered on day 1: 5,000,000 residents
   (household register and identity cards; 0.2% of the cards carry another address, which
   the conflict model finds), 1,200,000 marriages, 1,500,000 degrees, 5,000,000
   social-insurance rows, 1,500,000 housing-fund accounts, 500,000 students. Generated in SQL
   (``generate_series``), so set-up is not what is measured.
   Before each timed step (the full builds, the merge, the incremental builds), a CHECKPOINT
   and ``sync`` put the previous step's writes on disk, so a step pays for its own writes
   only (and, right after a checkpoint, a full-page image of every page it touches: the
   worst case for the merge and the incremental build's DELETE). Unsettled, the merge ran
   while the builds' ~4 GB of WAL and new tables were still being checkpointed and written
   back: 2.9-3.4 s in six runs; settled 2.70, 2.76 and 3.19 s in three (2026-12-02).
2. ``warehouse.population_full_5m_s``: ``warehouse.models.build_model`` of ``base.population``,
   full (CREATE TABLE AS beside the live table, swap, index, lineage), run twice (cold, warm);
   the slower counts. The conflict model's full build is reported beside it.
3. ``warehouse.merge_1pct_5m_s``: ``warehouse.load.load_delivery`` of a day-2 delivery of
   50,000 changed household-register rows (1%: new address and updated_at), typed as
   validation returns them: canonical text + row hash, COPY into staging, one set-based merge
   that moves the 50,000 previous versions to history, quarantine/check/run/load records.
4. ``warehouse.population_incremental_1pct_s``: the next ``build_model`` of ``base.population``:
   change capture from ``meta.loads`` (the 1% load), the 50,000 subjects rebuilt; the
   conflict model's incremental build beside it.

Results are MERGED into ``bench/results.json`` (read-modify-write: the keys
``warehouse.merge_1pct_5m_s``, ``warehouse.population_full_5m_s``,
``warehouse.population_incremental_1pct_s`` and ``warehouse.detail``; other keys kept) and a
section between ``<!-- warehouse:start -->`` / ``<!-- warehouse:end -->`` of ``bench/RESULTS.md``.
Environment: ``BENCH_PG`` (default ``postgres@127.0.0.1:5432``), ``BENCH_WH_ROWS`` (5000000),
``BENCH_WH_DB`` (``datarail_bench_wh``: the throwaway database), ``BENCH_WH_SEED=1``: keep the generated day-1 state (ods tables, their source indexes, the
meta records) as the database ``<BENCH_WH_DB>_seed_<rows>`` and, on the next run with the
same setting, clone it (``CREATE DATABASE ... TEMPLATE``, a file copy: ~15-30 s instead of the
~85 s generation); the seed carries a fingerprint of the generators, the migrations, the ods
layout and the catalog, and is regenerated when they changed. Drop it by hand when done:
``psql -h 127.0.0.1 -U postgres -c 'DROP DATABASE datarail_bench_wh_seed_5000000'``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DB = os.environ.get("BENCH_WH_DB", "datarail_bench_wh")
if not re.match(r"^[a-z_][a-z0-9_]{0,40}$", DB):
    raise SystemExit(f"BENCH_WH_DB={DB!r}: give a plain lower-case database name")
log = logging.getLogger("bench.warehouse")
TARGETS = {"merge_1pct_5m_s": 3.0, "population_full_5m_s": 30.0, "population_incremental_1pct_s": 5.0}


def _pg_admin() -> str:
    return f"postgresql+psycopg2://{os.environ.get('BENCH_PG', 'postgres@127.0.0.1:5432')}/postgres"


def _fresh_db() -> str:
    admin = sa.create_engine(_pg_admin(), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        c.exec_driver_sql(f'CREATE DATABASE "{DB}"')
    admin.dispose()
    return _pg_admin().rsplit("/", 1)[0] + f"/{DB}"


def _seed_name(n: int) -> str:
    return f"{DB}_seed_{n}"


def _fingerprint(n: int) -> str:
    """What the seeded state depends on: rows, generators, migrations, ods layout, catalog."""
    h = hashlib.sha256(f"{n}\n{GENERATORS!r}\n{META}".encode())
    for path in sorted([*(REPO / "warehouse_sql" / "migrations").glob("*.sql"), REPO / "warehouse" / "tables.py",
                        *(REPO / "catalog" / "demo" / "resources").glob("*.yaml")]):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def _clone_seed(n: int) -> str | None:
    """The bench database cloned from a seed of the same fingerprint, else None."""
    seed = _seed_name(n)
    admin = sa.create_engine(_pg_admin(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            note = c.execute(sa.text("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                     "WHERE datname = :d"), {"d": seed}).scalar()
            if note != _fingerprint(n):
                if note is not None:
                    log.info("seed %s is stale (%s): generating again", seed, note)
                    c.exec_driver_sql(f'DROP DATABASE "{seed}" WITH (FORCE)')
                return None
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
            c.exec_driver_sql(f'CREATE DATABASE "{DB}" TEMPLATE "{seed}" STRATEGY = FILE_COPY')
    finally:
        admin.dispose()
    log.info("cloned %s from the seed %s", DB, seed)
    return _pg_admin().rsplit("/", 1)[0] + f"/{DB}"


def _save_seed(n: int) -> None:
    """The generated state, kept as the seed database (the bench database must be idle)."""
    seed = _seed_name(n)
    admin = sa.create_engine(_pg_admin(), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{seed}" WITH (FORCE)')
        c.exec_driver_sql(f'CREATE DATABASE "{seed}" TEMPLATE "{DB}" STRATEGY = FILE_COPY')
        c.exec_driver_sql(f"COMMENT ON DATABASE \"{seed}\" IS '{_fingerprint(n)}'")
    admin.dispose()
    log.info("kept the generated state as %s (BENCH_WH_SEED=1 clones it next time)", seed)


def _drop_db() -> None:
    admin = sa.create_engine(_pg_admin(), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    admin.dispose()


# -- data, generated in the database -------------------------------------------------------

RID = "('33' || lpad({i}::text, 16, '0'))"
NAME = ("(substr('王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高', ({i} % 20) + 1, 1) || "
        "substr('伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平', (({i} / 20) % 20) + 1, 1) || "
        "substr('华英建国文军明海红玉', (({i} / 400) % 10) + 1, 1))")
ADDRESS = "('浙江省杭州市上城区解放路' || ({i} % 997) || '号' || ({i} % 31) || '幢')"
META = "'bench-day1', :k, md5({i}::text) || md5('{t}' || {i}::text), :loaded, :vf"

GENERATORS = {
    "household_register": (
        "resident_id, name, gender, birth_date, ethnicity, household_no, relation, division_code, address, phone, "
        "reg_status, updated_at",
        f"{RID}, {NAME}, CASE WHEN i % 2 = 0 THEN '女' ELSE '男' END, date '1940-01-01' + (i % 25000), '汉族', "
        f"lpad((i / 3)::text, 9, '0'), '户主', '330102', {ADDRESS}, '138' || lpad((i % 100000000)::text, 8, '0'), "
        f"'正常', timestamp '2026-11-19 08:00:00'", "1", "{n}"),
    "identity_card": (
        "resident_id, name, gender, ethnicity, birth_date, address, issuing_authority, valid_from, valid_to, updated_at",
        f"{RID}, {NAME}, CASE WHEN i % 2 = 0 THEN '女' ELSE '男' END, '汉族', date '1940-01-01' + (i % 25000), "
        f"CASE WHEN i % 500 = 0 THEN '浙江省杭州市西湖区文三路' || (i % 89) || '号' ELSE {ADDRESS} END, "
        f"'杭州市公安局上城分局', date '2016-01-01', date '2036-01-01', timestamp '2026-11-19 08:00:00'", "1", "{n}"),
    "marriage_registration": (
        "cert_no, reg_type, male_id, male_name, female_id, female_name, reg_date, reg_division, reg_office, "
        "updated_at",
        "'J' || i, '结婚', " + RID.format(i="(2 * i - 1)") + ", " + NAME.format(i="(2 * i - 1)") + ", "
        + RID.format(i="(2 * i)") + ", " + NAME.format(i="(2 * i)") + ", date '1980-01-01' + (i % 16000), "
        "'330102', '上城区婚姻登记处', timestamp '2026-11-19 08:00:00'", "1", "{m}"),
    "degree_certificate": (
        "cert_no, resident_id, name, gender, school, major, level, degree, graduation_date, conclusion, updated_at",
        f"'D' || i, {RID}, {NAME}, CASE WHEN i % 2 = 0 THEN '女' ELSE '男' END, '浙江大学', '数学', '本科', '学士', date '1990-06-30' + (i % 9000), '毕业', "
        f"timestamp '2026-11-19 08:00:00'", "1", "{d}"),
    "social_insurance": (
        "resident_id, name, insurance_type, employer_uscc, employer_name, start_date, status, division_code, "
        "updated_at",
        f"{RID.format(i='((i + 1) / 2)')}, {NAME.format(i='((i + 1) / 2)')}, "
        f"CASE WHEN i % 2 = 0 THEN '失业保险' ELSE '城镇职工基本养老保险' END, NULL, '某公司', date '2010-01-01', "
        f"'参保缴费', '330102', timestamp '2026-11-19 08:00:00'", "1", "{n}"),
    "provident_fund_account": (
        "account_no, resident_id, name, employer_name, open_date, status, updated_at",
        f"'F' || i, {RID.format(i='(i * 3)')}, {NAME.format(i='(i * 3)')}, '某公司', date '2010-01-01', '正常', "
        f"timestamp '2026-11-19 08:00:00'", "1", "{d}"),
    "student_enrolment": (
        "student_no, resident_id, name, gender, birth_date, school, stage, grade, enrol_date, status, division_code, "
        "updated_at",
        f"'S' || i, {RID.format(i='(i * 10)')}, {NAME.format(i='(i * 10)')}, '女', "
        f"date '1940-01-01' + ((i * 10) % 25000), '某小学', "
        f"'小学', '一年级', date '2020-09-01', '在读', '330102', timestamp '2026-11-19 08:00:00'", "1", "{s}"),
}


def generate(engine, catalog, n: int, day1) -> dict[str, int]:
    """Fill the ods tables as a day-1 delivery would have left them, with their meta.loads /
    meta.runs records (so change capture and lineage see them)."""
    from warehouse.tables import ensure_ods

    sizes = {"n": n, "m": int(n * 0.24), "d": int(n * 0.3), "s": int(n * 0.1)}
    loaded = datetime.now(UTC).replace(tzinfo=None)
    vf = day1.start.replace(tzinfo=None)
    counts = {}
    for table, (cols, exprs, lo, hi) in GENERATORS.items():
        res = catalog.resource_by_table(table)
        ensure_ods(engine, res)
        t0 = time.perf_counter()
        upper = int(hi.format(**sizes))
        sql = (f"INSERT INTO ods.{table} ({cols}, _run_id, _interval_key, _row_hash, _loaded_at, _valid_from) "
               f"SELECT {exprs.replace('{i}', 'i')}, {META.format(i='i', t=table)} "
               f"FROM generate_series({lo}, {upper}) AS g(i)")
        with engine.begin() as c:
            c.execute(sa.text(sql).bindparams(sa.bindparam("loaded", type_=sa.DateTime()),
                                              sa.bindparam("vf", type_=sa.DateTime())),
                      {"k": day1.key, "loaded": loaded, "vf": vf})
            c.execute(sa.text(
                "INSERT INTO meta.loads (load_id, resource, interval_key, run_id, method, rows_in, inserted, updated, "
                "unchanged, deleted, late, quarantined, valid_from, loaded_at, duration_s) VALUES (:id, :r, :k, "
                "'bench-day1', 'generated-direct', :n, :n, 0, 0, 0, 0, 0, :vf, :loaded, 0)").bindparams(
                sa.bindparam("loaded", type_=sa.DateTime()), sa.bindparam("vf", type_=sa.DateTime())),
                {"id": f"gen-{table}", "r": res.code, "k": day1.key, "n": upper, "vf": vf, "loaded": loaded})
            c.execute(sa.text(
                "INSERT INTO meta.runs (resource, interval_key, unit, interval_start, interval_end, run_id, status, "
                "extracted, loaded) VALUES (:r, :k, :u, :s, :e, 'bench-day1', 'loaded', :n, :n)").bindparams(
                sa.bindparam("s", type_=sa.DateTime()), sa.bindparam("e", type_=sa.DateTime())),
                {"r": res.code, "k": day1.key, "u": res.unit, "s": vf, "e": day1.end.replace(tzinfo=None), "n": upper})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql(f"VACUUM ANALYZE ods.{table}")
        counts[table] = upper
        log.info("generated ods.%s: %d rows in %.1f s", table, upper, time.perf_counter() - t0)
    return counts


def _settle(engine) -> None:
    """The writes so far reach the disk before the next step is timed: a checkpoint (its
    dirty buffers) and the kernel's dirty pages. A cloned seed is 6.6 GB of fresh files:
    their writeback otherwise ran during the first full build, whose own writes the kernel
    then throttled (cold build 32.5 s, warm 27.9 s, in one such run)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("CHECKPOINT")
    os.sync()


def changed_delivery(engine, resource, n: int) -> pd.DataFrame:
    """1% of the household register with a new address and updated_at, typed as validation
    returns rows (dates as datetime.date, datetimes as datetime64)."""
    names = [f.name for f in resource.fields]
    step = 100
    with engine.connect() as c:
        df = pd.read_sql(sa.text(f"SELECT {', '.join(names)} FROM ods.household_register "
                                 f"WHERE resident_id IN (SELECT '33' || lpad(i::text, 16, '0') "
                                 f"FROM generate_series({step}, {n}, {step}) AS g(i))"), c)
    df["address"] = df["address"] + "（迁）"
    df["updated_at"] = pd.Timestamp("2026-11-20 09:30:00")
    df["birth_date"] = pd.to_datetime(df["birth_date"]).dt.date
    df["_row"] = range(1, len(df) + 1)
    return df


def run(n: int) -> dict:
    from catalog import load_catalog
    from datarail.interval import Interval
    from datarail.settings import load_settings
    from warehouse.engine import get_engine
    from warehouse.load import load_delivery
    from warehouse.migrate import migrate
    from warehouse.models import build_model, ensure_sources, model_for

    seeded = os.environ.get("BENCH_WH_SEED") == "1"
    t0 = time.perf_counter()
    url = (_clone_seed(n) if seeded else None)
    cloned = url is not None
    url = url or _fresh_db()
    home = tempfile.mkdtemp(prefix="datarail_bench_wh_")
    engine = get_engine(load_settings({"DATARAIL_HOME": home, "DATARAIL_WAREHOUSE_URL": url}))
    catalog = load_catalog(REPO / "catalog" / "demo")
    day1, day2 = Interval.daily(date(2026, 11, 20)), Interval.daily(date(2026, 11, 21))
    out: dict = {"rows": n}
    try:
        pop, conflicts = model_for("base.population"), model_for("quality.conflicts.population")
        if cloned:
            out["setup"] = f"cloned from the seed database {_seed_name(n)}"
        else:
            migrate(engine)
            out["generated"] = generate(engine, catalog, n, day1)
            out["setup"] = "generated in SQL"
        for m in (pop, conflicts):
            ensure_sources(engine, catalog, m)  # one-off source indexes: set-up, not measured
        if seeded and not cloned:
            engine.dispose()  # a template must have no connections
            _save_seed(n)
        _settle(engine)
        out["generate_s"] = round(time.perf_counter() - t0, 1)
        full = []
        for i in range(2):
            if i:
                _settle(engine)  # the cold build's 2 GB of heap and WAL are not the warm build's
            t0 = time.perf_counter()
            b = build_model(engine, catalog, pop, day1, full=True)
            full.append(round(time.perf_counter() - t0, 3))
        out["population_full_runs_s"] = full
        out["population_full_5m_s"] = max(full)
        out["population_rows"] = b["rows"]
        t0 = time.perf_counter()
        b = build_model(engine, catalog, conflicts, day1, full=True)
        out["population_conflicts_full_5m_s"] = round(time.perf_counter() - t0, 3)
        out["population_conflicts"] = b["rows"]

        hr = catalog.resource_by_table("household_register")
        delivery = changed_delivery(engine, hr, n)
        empty_q = pd.DataFrame(columns=["_row", "key", "reasons", "record"])
        _settle(engine)  # the builds' writes are not the merge's
        t0 = time.perf_counter()
        loaded = load_delivery(engine, hr, interval=day2, run_id="bench-day2", passed=delivery, quarantined=empty_q,
                               checks=[], extracted=len(delivery), extract_summary={"bytes": 0},
                               latest_update="2026-11-21")
        out["merge_1pct_5m_s"] = round(time.perf_counter() - t0, 3)
        out["merge_rows"] = len(delivery)
        out["merge_stats"] = {k: loaded[k] for k in ("inserted", "updated", "unchanged", "late", "deleted")}

        _settle(engine)
        t0 = time.perf_counter()
        b = build_model(engine, catalog, pop, day2)
        out["population_incremental_1pct_s"] = round(time.perf_counter() - t0, 3)
        out["population_incremental_mode"] = b["mode"]
        out["population_incremental_subjects"] = b["scope_keys"]
        t0 = time.perf_counter()
        b = build_model(engine, catalog, conflicts, day2)
        out["population_conflicts_incremental_1pct_s"] = round(time.perf_counter() - t0, 3)
        with engine.connect() as c:
            out["history_rows_after_merge"] = c.execute(sa.text(
                "SELECT COUNT(*) FROM ods.household_register_history")).scalar()
            out["population_moved_addresses"] = c.execute(sa.text(
                "SELECT COUNT(*) FROM base.population WHERE address LIKE '%（迁）'")).scalar()
    finally:
        engine.dispose()
        _drop_db()
    return out


def write_results(out: dict, machine: dict) -> None:
    """Merge into bench/results.json (other keys kept) and replace our section of RESULTS.md."""
    path = HERE / "results.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data.pop("warehouse", None)  # an earlier layout of this section
    for key in TARGETS:
        data[f"warehouse.{key}"] = out.get(key)
    data["warehouse.detail"] = {**{k: v for k, v in out.items() if k not in TARGETS}, "machine": machine}
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    md = HERE / "RESULTS.md"
    text = md.read_text(encoding="utf-8") if md.exists() else ""
    section = _section(out, machine)
    pattern = re.compile(r"<!-- warehouse:start -->.*?<!-- warehouse:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    md.write_text(text, encoding="utf-8")


def _section(out: dict, machine: dict) -> str:
    def row(key, label, notes=""):
        v = out.get(key)
        target = TARGETS.get(key)
        verdict = "" if target is None or v is None else ("met" if v < target else "MISSED")
        return f"| {label} | {v if v is not None else 'n/a'} s | {f'< {target:g} s' if target else ''} | {verdict} | {notes} |"

    lines = [
        "<!-- warehouse:start -->",
        "# Warehouse benchmark (`python -m bench.warehouse`, issue 4)",
        "",
        f"Run {machine['date']} on {machine['nproc']} cores, load average at start {machine['loadavg_at_start']}, "
        f"at end {machine.get('loadavg_at_end')} (other work on the machine slows every number here); "
        f"PostgreSQL {machine.get('postgres', '?')}. {out['rows']:,} residents; set-up "
        f"({out.get('setup', 'generated in SQL')}) {out.get('generate_s')} s, not measured.",
        "",
        "| run | time | target | | notes |",
        "|---|---|---|---|---|",
        row("merge_1pct_5m_s", f"merge a 1% change ({out.get('merge_rows'):,} rows) into the 5M-row ods table",
            f"load_delivery end to end: {out.get('merge_stats')}"),
        row("population_full_5m_s", "population library, full rebuild",
            f"runs {out.get('population_full_runs_s')} (cold, warm), {out.get('population_rows'):,} rows"),
        row("population_incremental_1pct_s", "population library, incremental after the 1% change",
            f"{out.get('population_incremental_mode')}, {out.get('population_incremental_subjects')} subjects"),
        row("population_conflicts_full_5m_s", "population conflicts, full",
            f"{out.get('population_conflicts')} conflicts found"),
        row("population_conflicts_incremental_1pct_s", "population conflicts, incremental"),
        "",
        "Keys in `results.json`: `warehouse.merge_1pct_5m_s`, `warehouse.population_full_5m_s`, "
        "`warehouse.population_incremental_1pct_s` (seconds); `warehouse.detail` holds the rest.",
        "<!-- warehouse:end -->",
    ]
    return "\n".join(lines)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    n = int(os.environ.get("BENCH_WH_ROWS", "5000000"))
    machine = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "nproc": os.cpu_count(),
               "loadavg_at_start": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()}
    admin = sa.create_engine(_pg_admin())
    with admin.connect() as c:
        machine["postgres"] = c.execute(sa.text("SHOW server_version")).scalar()
    admin.dispose()
    out = run(n)
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_results(out, machine)
    print(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
