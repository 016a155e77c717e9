"""``make bench``: datarail's extraction measured against the C floor, pandas and dlt.

Generates a seeded ``population`` table (1,000,000 rows; Chinese text) in a throwaway
MariaDB database and times, one after the other on the same machine:

(a) datarail extract -> stage -> load into PostgreSQL (``bench/steps.py datarail``);
(b) the same with Great Expectations validation (the DAG's own steps);
(c) the C floor: ``mariadb --batch -e "SELECT ..."`` piped into ``psql -c "\\copy ... FROM STDIN"``;
(d) naive pandas ``read_sql(chunksize=100_000)`` + ``to_sql``;
(e) dlt ``sql_database`` -> postgres;

then (a) and (c) again at 5,000,000 rows, and an incremental run of (a) after 1% of the
rows changed. Every measured step runs in its own process; wall time is the whole process
(interpreter start and imports included, like the C tools'), peak RSS the largest sum of
RSS over the step's process tree (sampled every 20 ms). Results: ``bench/results.json``
(overwritten) and ``bench/RESULTS.md``.

Environment: ``BENCH_MARIADB`` (default ``root@127.0.0.1:3306``), ``BENCH_PG`` (default
``postgres@127.0.0.1:5432``), ``BENCH_ROWS`` (default 1000000), ``BENCH_ROWS_BIG`` (5000000),
``BENCH_SKIP`` (comma list of: pandas, dlt, validated, big, incremental), ``BENCH_MEM_LIMIT_GB``
(address-space limit of each Python step, default 12: a step that would exhaust the shared
machine fails with MemoryError instead).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import sqlalchemy as sa
import yaml

from bench import population
from bench.catalog import population_resource

log = logging.getLogger("bench")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DB = "datarail_bench"
RES = "BENCH-POP-1"
FULL_DAY, INCR_DAY = "2026-11-21", "2026-11-22"
COLUMNS = population.COLUMNS


MEM_LIMIT_GB = float(os.environ.get("BENCH_MEM_LIMIT_GB", "12"))


def _limit_memory() -> None:
    # A step that holds a whole 5M-row delivery in memory must fail on its own (MemoryError),
    # not push a shared 24 GiB machine into the OOM killer.
    import resource

    limit = int(MEM_LIMIT_GB * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def measure(cmd: list[str] | str, *, env: dict | None = None, shell: bool = False, cwd: Path | None = None) -> dict:
    """Run ``cmd``; wall time, peak RSS of its process tree, exit code, stdout's last JSON line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=shell, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            executable="/bin/bash" if shell else None, cwd=cwd or REPO,
                            preexec_fn=None if shell else _limit_memory)
    ps = psutil.Process(proc.pid)
    peak = 0
    out_chunks: list[str] = []
    while proc.poll() is None:
        try:
            procs = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    out, err = proc.communicate()
    out_chunks.append(out)
    result = {"wall_s": round(wall, 3), "peak_rss_mb": round(peak / 2**20, 1), "rc": proc.returncode}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if lines:
        result["detail"] = json.loads(lines[-1])
    if proc.returncode != 0:
        result["error"] = err[-3000:]
        log.error("command failed (%s): %s", proc.returncode, err[-3000:])
    return result


def psql(db: str, sql: str, host: str, port: str, user: str) -> None:
    subprocess.run(["psql", "-h", host, "-p", port, "-U", user, "-d", db, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
                   check=True, capture_output=True, text=True)


class Bench:
    def __init__(self):
        my = os.environ.get("BENCH_MARIADB", "root@127.0.0.1:3306")
        pg = os.environ.get("BENCH_PG", "postgres@127.0.0.1:5432")
        self.my_user, self.my_hostport = my.split("@")
        self.my_host, self.my_port = self.my_hostport.split(":")
        self.pg_user, pg_hostport = pg.split("@")
        self.pg_host, self.pg_port = pg_hostport.split(":")
        self.rows = int(os.environ.get("BENCH_ROWS", "1000000"))
        self.rows_big = int(os.environ.get("BENCH_ROWS_BIG", "5000000"))
        self.skip = {s.strip() for s in os.environ.get("BENCH_SKIP", "").split(",") if s.strip()}
        self.work = Path(tempfile.mkdtemp(prefix="datarail_bench_"))
        self.mysql_url = f"mysql+pymysql://{self.my_user}@{self.my_hostport}/{DB}?charset=utf8mb4"
        self.pg_url = f"postgresql://{self.pg_user}@{self.pg_host}:{self.pg_port}/{DB}"
        self.conn = {"conn_type": "mysql", "host": self.my_host, "port": int(self.my_port), "login": self.my_user,
                     "password": None, "schema": DB, "extra": {}}
        self.catalog = self._catalog()

    # ---------------------------------------------------------------- setup

    def _catalog(self) -> Path:
        folder = self.work / "catalog"
        (folder / "resources").mkdir(parents=True)
        (folder / "items").mkdir()
        unit = {"code": "psb", "name_zh": "公安厅", "name_en": "Public Security", "contact_email": "psb@example.gov.cn",
                "region": "330000", "systems": [{"code": "huji", "name": "户籍", "kind": "sql", "conn_id": "bench_src"}]}
        (folder / "units.yaml").write_text(yaml.safe_dump({"units": [unit]}, allow_unicode=True), "utf-8")
        res = population_resource().model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        res = {**res, "code": RES, "table": "bench_population", "name_zh": "人口基准", "name_en": "Population bench",
               "unit": "psb", "system": "huji", "update_cycle": "daily", "sharing": {"type": "unconditional"}}
        (folder / "resources" / "psb.yaml").write_text(yaml.safe_dump({"resources": [res]}, allow_unicode=True),
                                                       "utf-8")
        (folder / "responsibilities.yaml").write_text(yaml.safe_dump({"responsibilities": [
            {"unit": "psb", "resource": RES, "cycle": "daily"}]}), "utf-8")
        (folder / "items" / "none.yaml").write_text("items: []\n", "utf-8")
        return folder

    def fresh_pg(self) -> None:
        """A new, empty target database (each measured load starts from nothing)."""
        admin = sa.create_engine(f"postgresql+psycopg2://{self.pg_user}@{self.pg_host}:{self.pg_port}/postgres",
                                 isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
            c.exec_driver_sql(f'CREATE DATABASE "{DB}"')
        admin.dispose()
        shutil.rmtree(self.work / "home", ignore_errors=True)

    def drop_pg(self) -> None:
        """Drop the throwaway target database."""
        admin = sa.create_engine(f"postgresql+psycopg2://{self.pg_user}@{self.pg_host}:{self.pg_port}/postgres",
                                 isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        admin.dispose()

    def env(self) -> dict:
        return {**os.environ, "DATARAIL_HOME": str(self.work / "home"), "DATARAIL_CATALOG": str(self.catalog),
                "DATARAIL_WAREHOUSE_URL": self.pg_url, "PYTHONPATH": str(REPO)}

    def prepare_warehouse(self) -> None:
        subprocess.run([sys.executable, "-c", "from datarail import pipeline; pipeline.prepare()"], env=self.env(),
                       check=True, cwd=REPO)

    # ---------------------------------------------------------------- runs

    def datarail(self, step: str, day: str = FULL_DAY) -> dict:
        cmd = [sys.executable, "-m", "bench.steps", step, RES, day, json.dumps(self.conn)]
        return measure(cmd, env=self.env())

    def c_floor(self) -> dict:
        psql(DB, "DROP SCHEMA IF EXISTS cfloor CASCADE; CREATE SCHEMA cfloor; CREATE TABLE cfloor.population ("
                 "id BIGINT PRIMARY KEY, id_card CHAR(18), name TEXT, gender TEXT, birth_date DATE, "
                 "region_code TEXT, address TEXT, phone TEXT, updated_at TIMESTAMP)",
             self.pg_host, self.pg_port, self.pg_user)
        select = f"SELECT {', '.join(COLUMNS)} FROM population"
        cmd = (f"set -o pipefail; mariadb -h{self.my_host} -P{self.my_port} -u{self.my_user} "
               f"--default-character-set=utf8mb4 --batch --quick --skip-column-names -e \"{select}\" {DB} | "
               f"psql -h {self.pg_host} -p {self.pg_port} -U {self.pg_user} -d {DB} -v ON_ERROR_STOP=1 "
               f"-c \"\\copy cfloor.population FROM STDIN\"")
        return measure(cmd, shell=True)

    def pandas(self) -> dict:
        psql(DB, "DROP SCHEMA IF EXISTS pandas_bench CASCADE; CREATE SCHEMA pandas_bench",
             self.pg_host, self.pg_port, self.pg_user)
        pg = f"postgresql+psycopg2://{self.pg_user}@{self.pg_host}:{self.pg_port}/{DB}"
        return measure([sys.executable, "-m", "bench.steps", "pandas", self.mysql_url, pg], env=self.env())

    def dlt(self) -> dict:
        try:
            import dlt  # noqa: F401
        except ImportError as exc:
            return {"skipped": f"dlt is not installed beside the project ({exc})"}
        work = self.work / "dlt"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        # dlt insists on a password; the server's trust authentication ignores it.
        pg = f"postgresql://{self.pg_user}:unused@{self.pg_host}:{self.pg_port}/{DB}"
        return measure([sys.executable, "-m", "bench.steps", "dlt", self.mysql_url.split("?")[0], pg, str(work)],
                       env={**self.env(), "RUNTIME__LOG_LEVEL": "WARNING"}, cwd=work)


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    free = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "memory_total_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "free_h": free, "loadavg_at_start": [round(x, 2) for x in load], "python": platform.python_version(),
            "platform": platform.platform()}


def secs(r: dict | None) -> float | None:
    return None if not r or r.get("rc") not in (0, None) or "wall_s" not in r else r["wall_s"]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s")
    b = Bench()
    started = datetime.now(UTC)
    raw: dict[str, dict] = {}
    results: dict = {"date": started.isoformat(timespec="seconds"), "machine": machine(), "rows": b.rows,
                     "rows_big": b.rows_big}
    try:
        log.info("generating %d rows in MariaDB database %s", b.rows, DB)
        t = time.perf_counter()
        population.create_database(DB)
        population.load_rows(DB, 1, b.rows, seed=20261122)
        raw["generate_1m"] = {"wall_s": round(time.perf_counter() - t, 1)}

        log.info("(c) C floor at %d rows", b.rows)
        b.fresh_pg()
        raw["c_floor_1m"] = b.c_floor()
        log.info("(a) datarail at %d rows", b.rows)
        b.fresh_pg()
        b.prepare_warehouse()
        raw["datarail_1m"] = b.datarail("datarail")
        log.info("(a') datarail extract only")
        raw["datarail_extract_1m"] = b.datarail("datarail_extract")
        if "incremental" not in b.skip:
            n = population.touch_rows(DB, 0.01, datetime(2026, 11, 22, 10, 0), seed=7)
            log.info("incremental: %d rows changed (1%%), run of the next interval", n)
            raw["incremental_changed_rows"] = {"rows": n}
            raw["incremental_1pct"] = b.datarail("datarail", INCR_DAY)
        if "validated" not in b.skip:
            log.info("(b) datarail with validation at %d rows", b.rows)
            b.fresh_pg()
            b.prepare_warehouse()
            raw["datarail_validated_1m"] = b.datarail("datarail_validated")
        if "pandas" not in b.skip:
            log.info("(d) pandas at %d rows", b.rows)
            b.fresh_pg()
            raw["pandas_1m"] = b.pandas()
        if "dlt" not in b.skip:
            log.info("(e) dlt at %d rows", b.rows)
            b.fresh_pg()
            raw["dlt_1m"] = b.dlt()
        if "big" not in b.skip:
            log.info("growing the table to %d rows", b.rows_big)
            t = time.perf_counter()
            population.load_rows(DB, b.rows + 1, b.rows_big - b.rows, seed=20261122)
            raw["generate_5m"] = {"wall_s": round(time.perf_counter() - t, 1)}
            log.info("(c) C floor at %d rows", b.rows_big)
            b.fresh_pg()
            raw["c_floor_5m"] = b.c_floor()
            log.info("(a) datarail at %d rows", b.rows_big)
            b.fresh_pg()
            b.prepare_warehouse()
            raw["datarail_5m"] = b.datarail("datarail")
            log.info("(a') datarail extract only at %d rows", b.rows_big)
            raw["datarail_extract_5m"] = b.datarail("datarail_extract")
    finally:
        try:
            population.drop_database(DB)
        except subprocess.CalledProcessError:
            log.warning("could not drop the MariaDB bench database")
        try:
            b.drop_pg()
        except sa.exc.SQLAlchemyError:
            log.warning("could not drop the PostgreSQL bench database")
        shutil.rmtree(b.work, ignore_errors=True)

    dlt_r = raw.get("dlt_1m") or {}
    results["extract_1m"] = {
        "datarail_s": secs(raw.get("datarail_1m")),
        "datarail_validated_s": secs(raw.get("datarail_validated_1m")),
        "c_floor_s": secs(raw.get("c_floor_1m")),
        "pandas_s": secs(raw.get("pandas_1m")),
        "dlt_s": secs(dlt_r) if "skipped" not in dlt_r else None,
        "datarail_peak_rss_mb": (raw.get("datarail_1m") or {}).get("peak_rss_mb"),
        "datarail_extract_only_s": secs(raw.get("datarail_extract_1m")),
        "datarail_extract_only_peak_rss_mb": (raw.get("datarail_extract_1m") or {}).get("peak_rss_mb"),
        "c_floor_peak_rss_mb": (raw.get("c_floor_1m") or {}).get("peak_rss_mb"),
        "dlt_peak_rss_mb": dlt_r.get("peak_rss_mb"),
        "pandas_peak_rss_mb": (raw.get("pandas_1m") or {}).get("peak_rss_mb"),
    }
    if "skipped" in dlt_r:
        results["extract_1m"]["dlt_note"] = dlt_r["skipped"]
    results["extract_5m"] = {
        "datarail_s": secs(raw.get("datarail_5m")),
        "c_floor_s": secs(raw.get("c_floor_5m")),
        "datarail_peak_rss_mb": (raw.get("datarail_5m") or {}).get("peak_rss_mb"),
        "datarail_extract_only_s": secs(raw.get("datarail_extract_5m")),
        "datarail_extract_only_peak_rss_mb": (raw.get("datarail_extract_5m") or {}).get("peak_rss_mb"),
    }
    inc = raw.get("incremental_1pct")
    results["incremental_1pct_s"] = secs(inc)
    results["incremental_1pct_in_process_s"] = (inc or {}).get("detail", {}).get("in_process_s")
    results["datarail_1m_in_process_s"] = (raw.get("datarail_1m") or {}).get("detail", {}).get("in_process_s")
    results["raw"] = raw
    results["duration_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    write_results(results)
    log.info("wrote %s and %s", HERE / "results.json", HERE / "RESULTS.md")
    return 0


MD_START, MD_END = "<!-- extraction:start -->", "<!-- extraction:end -->"


def write_results(results: dict) -> None:
    """Replace this benchmark's keys in ``results.json`` and its section of ``RESULTS.md``;
    keys and sections other benchmarks (``bench/warehouse.py``, ``bench/quality_validate.py``)
    merged in are kept."""
    path = HERE / "results.json"
    try:
        old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except ValueError:
        old = {}
    mine = set(results)
    merged = {**{k: v for k, v in old.items() if k not in mine and k not in _OWN_KEYS}, **results}
    path.write_text(json.dumps(merged, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    md = HERE / "RESULTS.md"
    text = md.read_text(encoding="utf-8") if md.exists() else ""
    section = f"{MD_START}\n{render(results)}{MD_END}\n"
    if MD_START in text and MD_END in text:
        head, rest = text.split(MD_START, 1)
        text = head + section + rest.split(MD_END, 1)[1].lstrip("\n")
    elif text.startswith("# Extraction benchmark"):  # an unmarked file written by an older run: ours
        cut = text.find("<!--")
        text = section + (text[cut:] if cut >= 0 else "")
    else:
        text = section + ("\n" + text if text else "")
    md.write_text(text, encoding="utf-8")


# Keys this benchmark writes (and so replaces) in results.json.
_OWN_KEYS = {"date", "machine", "rows", "rows_big", "extract_1m", "extract_5m", "incremental_1pct_s",
             "incremental_1pct_in_process_s", "datarail_1m_in_process_s", "raw", "duration_s"}


def _f(v, unit="s") -> str:
    return "n/a" if v is None else f"{v:.1f} {unit}" if unit else f"{v}"


def _ratio(a, b) -> str:
    return "n/a" if a is None or b in (None, 0) else f"{a / b:.2f}x"


def render(r: dict) -> str:
    """The human table of ``bench/RESULTS.md``."""
    m, e1, e5 = r["machine"], r["extract_1m"], r["extract_5m"]
    raw = r["raw"]

    def rss(key):
        return _f((raw.get(key) or {}).get("peak_rss_mb"), "MB")

    def detail(key):
        d = (raw.get(key) or {}).get("detail") or {}
        return ", ".join(f"{k} {v}" for k, v in d.items() if k.endswith("_s") and k != "in_process_s")

    lines = [
        "# Extraction benchmark (`make bench`)",
        "",
        f"Run {r['date']} on {m['nproc']} cores ({m['cpu_model']}), {m['memory_total_gb']} GiB; load average at "
        f"start {m['loadavg_at_start']}. Python {m['python']}. Wall times are whole processes (interpreter start "
        "and imports included); peak RSS is the sum over the step's process tree. "
        f"Source: MariaDB table `population`, {r['rows']:,} rows (then {r['rows_big']:,}), seeded, Chinese text; "
        "target: PostgreSQL on the same machine.",
        "",
        "```",
        m["free_h"],
        "```",
        "",
        "| run | rows | wall | peak RSS | vs C floor | notes |",
        "|---|---|---|---|---|---|",
        f"| (a) datarail extract -> stage -> load | {r['rows']:,} | {_f(e1['datarail_s'])} | "
        f"{rss('datarail_1m')} | {_ratio(e1['datarail_s'], e1['c_floor_s'])} | {detail('datarail_1m')} |",
        f"| (a') datarail extract -> stage only | {r['rows']:,} | {_f(e1['datarail_extract_only_s'])} | "
        f"{rss('datarail_extract_1m')} | {_ratio(e1['datarail_extract_only_s'], e1['c_floor_s'])} | "
        f"{detail('datarail_extract_1m')} |",
        f"| (b) datarail + Great Expectations validation | {r['rows']:,} | {_f(e1['datarail_validated_s'])} | "
        f"{rss('datarail_validated_1m')} | {_ratio(e1['datarail_validated_s'], e1['c_floor_s'])} | "
        f"{detail('datarail_validated_1m')} |",
        f"| (c) C floor: mariadb --batch \\| psql \\copy | {r['rows']:,} | {_f(e1['c_floor_s'])} | "
        f"{rss('c_floor_1m')} | 1.00x | |",
        f"| (d) pandas read_sql(chunksize) + to_sql | {r['rows']:,} | {_f(e1['pandas_s'])} | {rss('pandas_1m')} | "
        f"{_ratio(e1['pandas_s'], e1['c_floor_s'])} | |",
        f"| (e) dlt sql_database -> postgres | {r['rows']:,} | {_f(e1['dlt_s'])} | {rss('dlt_1m')} | "
        f"{_ratio(e1['dlt_s'], e1['c_floor_s'])} | {e1.get('dlt_note', 'connectorx backend, other settings default')} |",
        f"| (a) datarail | {r['rows_big']:,} | {_f(e5['datarail_s'])} | {rss('datarail_5m')} | "
        f"{_ratio(e5['datarail_s'], e5['c_floor_s'])} | {detail('datarail_5m')} |",
        f"| (a') datarail extract only | {r['rows_big']:,} | {_f(e5['datarail_extract_only_s'])} | "
        f"{rss('datarail_extract_5m')} | {_ratio(e5['datarail_extract_only_s'], e5['c_floor_s'])} | "
        f"{detail('datarail_extract_5m')} |",
        f"| (c) C floor | {r['rows_big']:,} | {_f(e5['c_floor_s'])} | {rss('c_floor_5m')} | 1.00x | |",
        f"| (a) incremental, 1% changed | {(raw.get('incremental_changed_rows') or {}).get('rows', 'n/a')} changed | "
        f"{_f(r['incremental_1pct_s'])} | {rss('incremental_1pct')} | | in-process "
        f"{_f(r.get('incremental_1pct_in_process_s'))} vs full run in-process {_f(r.get('datarail_1m_in_process_s'))};"
        f" {detail('incremental_1pct')} |",
        "",
        "## Targets",
        "",
        f"- (a) within 2.5x of (c) at 1M: {_ratio(e1['datarail_s'], e1['c_floor_s'])}; within 1.5x at 5M: "
        f"{_ratio(e5['datarail_s'], e5['c_floor_s'])}",
        f"- (b) within 4x of (c) at 1M: {_ratio(e1['datarail_validated_s'], e1['c_floor_s'])}",
        f"- (a) at least 10x faster than (d): {_ratio(e1['pandas_s'], e1['datarail_s'])}; faster than (e): "
        f"{_ratio(e1['dlt_s'], e1['datarail_s'])}",
        f"- peak RSS of (a) under 400 MB: {e1['datarail_peak_rss_mb']} MB at 1M, {e5['datarail_peak_rss_mb']} MB at 5M"
        f" (extraction alone: {e1['datarail_extract_only_peak_rss_mb']} MB / {e5['datarail_extract_only_peak_rss_mb']}"
        " MB)",
        f"- incremental under 5% of the full run: {_ratio(r['incremental_1pct_s'], e1['datarail_s'])} (whole "
        f"process), {_ratio(r.get('incremental_1pct_in_process_s'), r.get('datarail_1m_in_process_s'))} (in process)",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
