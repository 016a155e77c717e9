"""Issue 3 end to end through ``datarail.pipeline`` (extract -> validate -> load), against the
real MariaDB and PostgreSQL on this machine in throwaway databases: a source that goes down
mid-extract, late rows caught by the lookback, deletes seen by the snapshot diff, key-range
extraction, bad files, an API answering 429 then 500 then 200, state show/reset and backfill."""

from __future__ import annotations

import json
import socket
import threading
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from datarail import pipeline
from datarail.errors import ExtractError
from datarail.interval import Interval
from datarail.settings import load_settings
from tests.helpers import CONSUMER, UNIT

pytestmark = pytest.mark.integration

D1, D2, D3 = date(2026, 11, 21), date(2026, 11, 22), date(2026, 11, 23)


# ------------------------------------------------------------------------------ helpers


def write_catalog(folder: Path, resources: list[dict], systems: list[dict]) -> Path:
    """A tiny catalog folder (YAML) the pipeline loads like the demo's."""
    (folder / "resources").mkdir(parents=True)
    (folder / "items").mkdir()
    unit = {**UNIT, "systems": systems}
    (folder / "units.yaml").write_text(yaml.safe_dump({"units": [unit, CONSUMER]}, allow_unicode=True), "utf-8")
    (folder / "resources" / "psb.yaml").write_text(yaml.safe_dump({"resources": resources}, allow_unicode=True),
                                                   "utf-8")
    (folder / "responsibilities.yaml").write_text(yaml.safe_dump({"responsibilities": [
        {"unit": "psb", "resource": r["code"], "cycle": "daily"} for r in resources]}), "utf-8")
    (folder / "items" / "none.yaml").write_text("items: []\n", "utf-8")
    return folder


def person(code: str, table: str, *, mode: str = "watermark", lookback: int = 0, system: str = "huji", **over):
    r = {"code": code, "table": table, "name_zh": "人员", "name_en": "People", "unit": "psb", "system": system,
         "location": {"table": "people"},
         "fields": [{"name": "id", "type": "integer", "required": True}, {"name": "name", "required": True},
                    {"name": "updated_at", "type": "datetime", "required": True}],
         "primary_key": ["id"], "update_cycle": "daily", "sharing": {"type": "unconditional"},
         "change_tracking": ({"mode": "watermark", "column": "updated_at", "lookback_days": lookback}
                             if mode == "watermark" else {"mode": "snapshot"})}
    r.update(over)
    return r


def settings_for(tmp_path: Path, catalog: Path, warehouse_url: str | None = None):
    env = {"DATARAIL_HOME": str(tmp_path / "home"), "DATARAIL_CATALOG": str(catalog)}
    if warehouse_url:
        env["DATARAIL_WAREHOUSE_URL"] = warehouse_url
    return load_settings(env)


def run_interval(code: str, day: date, conn: dict, settings) -> dict:
    """extract -> validate -> load for one daily interval; the three summaries."""
    iv = Interval.daily(day)
    s, e = iv.start.isoformat(), iv.end.isoformat()
    ext = pipeline.extract(code, s, e, conn=conn, settings=settings, chunk_rows=500)
    if ext.get("skipped"):
        return {"extract": ext}
    val = pipeline.validate(code, s, e, extract_summary=ext, settings=settings)
    loaded = pipeline.load(code, s, e, extract_summary=ext, validate_summary=val, run_id=f"t_{iv.key}",
                           settings=settings)
    return {"extract": ext, "validate": val, "load": loaded}


def ods_ids(settings, table: str) -> list[int]:
    from warehouse.engine import get_engine

    with get_engine(settings).connect() as c:
        return [r[0] for r in c.execute(sa.text(f"SELECT id FROM ods.{table} ORDER BY id"))]


def sql_conn(url: str, **extra) -> dict:
    u = sa.make_url(url)
    kind = "mysql" if u.drivername.startswith("mysql") else "postgres"
    return {"conn_type": kind, "host": u.host, "port": u.port, "login": u.username, "password": u.password,
            "schema": u.database, "extra": extra}


def make_people(url: str, rows: list[tuple[int, str, datetime]]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE people (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL, "
                          "updated_at TIMESTAMP NULL)")
        c.execute(sa.text("INSERT INTO people VALUES (:i, :n, :u)"),
                  [{"i": i, "n": n, "u": u} for i, n, u in rows])
    engine.dispose()


class FlakyProxy:
    """A TCP proxy on 127.0.0.1 to a database server that cuts every connection once more
    than ``cut_after`` bytes went from the server to the client (the source "goes down")."""

    def __init__(self, port: int, cut_after: int | None = None):
        self.port_to, self.cut_after, self.sent, self.cut = port, cut_after, 0, False
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port_to))
            for src, dst, count in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(src, dst, count), daemon=True).start()

    def _pipe(self, src, dst, count):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count and self.cut_after is not None:
                    with self.lock:
                        self.sent += len(data)
                        over = self.sent > self.cut_after
                    if over:
                        self.cut = True
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.sock.close()


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("engine", ["connectorx", "sqlalchemy"])
def test_source_down_mid_extract_then_resume_from_committed_watermark(engine, mariadb_url, pg_url, tmp_path):
    rows = ([(i, f"甲{i}", datetime(2026, 11, 21, 8) + timedelta(seconds=i)) for i in range(1, 3001)]
            + [(i, f"乙{i}", datetime(2026, 11, 22, 8) + timedelta(seconds=i)) for i in range(3001, 6001)]
            + [(6001, "丙", datetime(2026, 11, 23, 9))])  # after interval 2: never staged by it
    make_people(mariadb_url, rows)
    catalog = write_catalog(tmp_path / "catalog", [person("RK-T-0001", "people")],
                            [{"code": "huji", "name": "户籍", "kind": "sql", "conn_id": "c_psb"}])
    settings = settings_for(tmp_path, catalog, pg_url)
    pipeline.prepare(settings)
    port = sa.make_url(mariadb_url).port or 3306
    proxy = FlakyProxy(port)
    # prefer_socket=false: connectorx would otherwise leave the proxy for MariaDB's unix socket.
    conn = {**sql_conn(mariadb_url, sql_engine=engine, connectorx_params={"prefer_socket": "false"}),
            "port": proxy.port}

    first = run_interval("RK-T-0001", D1, conn, settings)
    assert first["load"]["loaded"] == 3000
    w1 = first["extract"]["watermark_after"]
    assert w1 == "2026-11-21 08:50:00"

    proxy.sent, proxy.cut_after = 0, 40_000  # the source dies part-way through interval 2's read
    iv2 = Interval.daily(D2)
    with pytest.raises(ExtractError, match="the source database failed"):
        pipeline.extract("RK-T-0001", iv2.start.isoformat(), iv2.end.isoformat(), conn=conn, settings=settings,
                         chunk_rows=500)
    assert proxy.cut
    raw = settings.staging_dir / "psb" / "people" / iv2.key / "raw"
    assert not list(raw.glob("*.parquet")) and not list(raw.glob(".part-*"))  # nothing half-staged
    from warehouse.engine import get_engine
    with get_engine(settings).connect() as c:
        failed = c.execute(sa.text("SELECT status, watermark_before FROM meta.extract_runs WHERE interval_key = :k"),
                           {"k": iv2.key}).one()
        assert tuple(failed) == ("failed", w1)
        assert c.execute(sa.text("SELECT status FROM meta.runs WHERE interval_key = :k"), {"k": iv2.key}).scalar() \
            == "failed"
    assert ods_ids(settings, "people") == list(range(1, 3001))  # the failed run loaded nothing

    proxy.cut_after = None  # the source is back: the rerun resumes from the committed watermark
    second = run_interval("RK-T-0001", D2, conn, settings)
    assert second["extract"]["watermark_before"] == w1
    assert second["extract"]["rows"] == 3000 and second["load"]["loaded"] == 3000
    assert ods_ids(settings, "people") == list(range(1, 6001))  # nothing duplicated, nothing lost
    proxy.close()


@pytest.mark.parametrize("engine", ["connectorx", "sqlalchemy"])
def test_late_rows_are_caught_by_the_lookback(engine, pg_url, tmp_path):
    make_people(pg_url, [(1, "甲", datetime(2026, 11, 21, 10)), (2, "乙", datetime(2026, 11, 21, 12))])
    catalog = write_catalog(tmp_path / "catalog", [person("RK-T-0002", "people", lookback=1)],
                            [{"code": "huji", "name": "户籍", "kind": "sql", "conn_id": "c_psb"}])
    settings = settings_for(tmp_path, catalog)  # embedded SQLite warehouse, PostgreSQL source
    pipeline.prepare(settings)
    conn = sql_conn(pg_url, sql_engine=engine)
    assert run_interval("RK-T-0002", D1, conn, settings)["extract"]["watermark_after"] == "2026-11-21 12:00:00"
    # A row committed late, with a change time before the watermark, and a normal new row.
    eng = sa.create_engine(pg_url)
    with eng.begin() as c:
        c.execute(sa.text("INSERT INTO people VALUES (3, '丙', '2026-11-21 11:00:00'), (4, '丁', '2026-11-22 09:00:00')"))
    eng.dispose()
    second = run_interval("RK-T-0002", D2, conn, settings)
    assert second["extract"]["watermark_before"] == "2026-11-21 12:00:00"
    assert second["extract"]["rows"] == 4  # the lookback re-reads the day before: 1, 2, late 3, new 4
    assert ods_ids(settings, "people") == [1, 2, 3, 4]
    assert second["extract"]["watermark_after"] == "2026-11-22 09:00:00"


def test_snapshot_diff_sees_inserts_updates_deletes(mariadb_url, pg_url, tmp_path):
    make_people(mariadb_url, [(i, f"人{i}", datetime(2026, 11, 1)) for i in range(1, 6)])
    catalog = write_catalog(tmp_path / "catalog", [person("RK-T-0003", "people", mode="snapshot")],
                            [{"code": "huji", "name": "户籍", "kind": "sql", "conn_id": "c_psb"}])
    settings = settings_for(tmp_path, catalog, pg_url)
    pipeline.prepare(settings)
    conn = sql_conn(mariadb_url)
    first = run_interval("RK-T-0003", D1, conn, settings)
    assert first["extract"]["changes"] | {"baseline_interval": None} == {
        "inserted": 5, "updated": 0, "deleted": 0, "unchanged": 0, "baseline_interval": None}
    eng = sa.create_engine(mariadb_url)
    with eng.begin() as c:
        c.execute(sa.text("DELETE FROM people WHERE id IN (2, 4)"))
        c.execute(sa.text("UPDATE people SET name = '改名' WHERE id = 3"))
        c.execute(sa.text("INSERT INTO people VALUES (9, '新人', '2026-11-22 01:00:00')"))
    eng.dispose()
    second = run_interval("RK-T-0003", D2, conn, settings)
    changes = second["extract"]["changes"]
    assert (changes["inserted"], changes["updated"], changes["deleted"], changes["unchanged"]) == (1, 1, 2, 2)
    assert changes["baseline_interval"] == Interval.daily(D1).key
    diff = pq.read_table(Path(second["extract"]["files"][0]).parent / "changes.parquet").to_pylist()
    assert sorted((json.loads(d["key"])[0], d["change"]) for d in diff) == [
        ("2", "deleted"), ("3", "updated"), ("4", "deleted"), ("9", "inserted")]
    assert ods_ids(settings, "people") == [1, 3, 5, 9]  # the load closed the deleted keys
    # A rerun of interval 2 diffs against interval 1 again: the same answer.
    again = run_interval("RK-T-0003", D2, conn, settings)
    assert again["extract"]["changes"] == changes


def test_partitioned_extraction_equals_one_piece(mariadb_url, pg_url, tmp_path):
    make_people(mariadb_url, [(i, f"人{i}", datetime(2026, 11, 22, 1)) for i in range(1, 1001)])
    part = {"column": "id", "ranges": 3, "min_span": 10}
    catalog = write_catalog(tmp_path / "catalog", [person("RK-T-0004", "people", mode="snapshot", partition=part)],
                            [{"code": "huji", "name": "户籍", "kind": "sql", "conn_id": "c_psb"}])
    settings = settings_for(tmp_path, catalog, pg_url)
    pipeline.prepare(settings)
    conn = sql_conn(mariadb_url)
    iv = Interval.daily(D2)
    s, e = iv.start.isoformat(), iv.end.isoformat()
    ranges = pipeline.extract_plan("RK-T-0004", conn=conn, settings=settings)
    assert [(r["lo"], r["hi"]) for r in ranges] == [(None, 335), (335, 669), (669, None)]
    parts = [pipeline.extract("RK-T-0004", s, e, conn=conn, settings=settings, part=r, chunk_rows=100)
             for r in reversed(ranges)]  # mapped tasks finish in any order
    merged = pipeline.extract_merge("RK-T-0004", s, e, parts=parts, settings=settings)
    assert merged["rows"] == 1000 and merged["parts"] == 3 and merged["changes"]["inserted"] == 1000
    rows = [r for f in merged["files"] for r in pq.read_table(f).to_pylist()]
    assert [r["_row"] for r in rows] == list(range(1, 1001))
    assert [int(r["id"]) for r in rows] == list(range(1, 1001))  # key order across ranges
    assert not (Path(merged["files"][0]).parent / ".parts").exists()
    one = pipeline.extract("RK-T-0004", s, e, conn=conn, settings=settings)
    one_rows = [r for f in one["files"] for r in pq.read_table(f).to_pylist()]
    assert one_rows == rows


def test_bad_files_are_rejected_with_reason_and_never_ingested_twice(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    res = {"code": "RK-T-0005", "table": "people", "name_zh": "人员", "name_en": "People", "unit": "psb",
           "system": "drop", "location": {"file": "people_*.*", "sheet": None},
           "fields": [{"name": "id", "type": "integer", "required": True, "source": "编号"},
                      {"name": "name", "required": True, "source": "姓名"},
                      {"name": "updated_at", "type": "datetime", "source": "更新时间"}],
           "primary_key": ["id"], "update_cycle": "daily", "sharing": {"type": "unconditional"}}
    catalog = write_catalog(tmp_path / "catalog", [res], [{"code": "drop", "name": "前置机", "kind": "file",
                                                           "conn_id": "c_drop"}])
    settings = settings_for(tmp_path, catalog)
    pipeline.prepare(settings)
    conn = {"conn_type": "fs", "extra": {"path": str(drop)}}
    archive = drop / "_archive"

    # Interval 1: a good CSV (GBK), an empty file, a header-only file and an XLSX with a title block.
    (drop / "people_1.csv").write_bytes("编号,姓名,更新时间\n1,张三,2026-11-21 08:00:00\n".encode("gbk"))
    (drop / "people_2.csv").write_bytes(b"")
    (drop / "people_3.csv").write_text("编号,姓名,更新时间\n", encoding="utf-8")
    import openpyxl
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["人员名单（2026年11月）"])
    ws.merge_cells("A1:C1")
    ws.append([])
    ws.append(["编号", "姓名", "更新时间"])
    ws.append([2, "李四", datetime(2026, 11, 21, 9)])
    wb.save(drop / "people_4.xlsx")
    first = run_interval("RK-T-0005", D1, conn, settings)
    assert first["load"]["loaded"] == 2
    k1 = Interval.daily(D1).key
    assert sorted(p.name for p in (archive / "processed" / k1).iterdir()) == [
        "people_1.csv", "people_2.csv", "people_3.csv", "people_4.xlsx"]
    assert not list(drop.glob("people_*"))
    # A rerun of interval 1 reads its own archived files again: same result; a file delivered
    # again for the same interval replaces its archived copy (read once, not twice).
    assert run_interval("RK-T-0005", D1, conn, settings)["load"]["loaded"] == 2
    (drop / "people_1.csv").write_bytes("编号,姓名,更新时间\n1,张三,2026-11-21 08:00:00\n".encode("gbk"))
    again = run_interval("RK-T-0005", D1, conn, settings)
    assert again["extract"]["rows"] == 2 and again["load"]["loaded"] == 2
    (drop / "people_1.csv").write_bytes("编号,姓名,更新时间\n1,张三丰,2026-11-21 08:00:00\n".encode("gbk"))
    fixed = run_interval("RK-T-0005", D1, conn, settings)  # corrected re-delivery of the same file
    assert fixed["extract"]["rows"] == 2 and fixed["load"]["loaded"] == 2
    assert (archive / "processed" / k1 / "people_1.csv").read_bytes().decode("gbk").count("张三丰") == 1

    # Interval 2: the same CSV again (duplicate), a ragged CSV and a file that is not UTF-8/GB18030.
    (drop / "people_1_again.csv").write_bytes("编号,姓名,更新时间\n1,张三,2026-11-21 08:00:00\n".encode("gbk"))
    (drop / "people_5.csv").write_text("编号,姓名,更新时间\n3,王五,2026-11-22 08:00:00,多余\n", encoding="utf-8")
    iv2 = Interval.daily(D2)
    with pytest.raises(ExtractError, match="line 2: 4 cells"):
        pipeline.extract("RK-T-0005", iv2.start.isoformat(), iv2.end.isoformat(), conn=conn, settings=settings)
    rejected = archive / "rejected" / iv2.key
    assert sorted(p.name for p in rejected.iterdir()) == [
        "people_1_again.csv", "people_1_again.csv.reason.txt", "people_5.csv", "people_5.csv.reason.txt"]
    assert "duplicate" in (rejected / "people_1_again.csv.reason.txt").read_text(encoding="utf-8")
    assert "4 cells" in (rejected / "people_5.csv.reason.txt").read_text(encoding="utf-8")
    (drop / "people_6.csv").write_bytes("编号,姓名,更新时间\n".encode() + b"4,caf\xe9 ,2026-11-22\n")  # Latin-1
    loc = tmp_path / "catalog" / "resources" / "psb.yaml"
    with pytest.raises(ExtractError, match="does not decode as utf-8"):
        # declared encoding: never loaded as mojibake
        doc = yaml.safe_load(loc.read_text(encoding="utf-8"))
        doc["resources"][0]["location"]["encoding"] = "utf-8"
        loc.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        pipeline._catalog.cache_clear()
        pipeline.extract("RK-T-0005", iv2.start.isoformat(), iv2.end.isoformat(), conn=conn, settings=settings)
    assert (rejected / "people_6.csv.reason.txt").exists()
    # Nothing new left in the drop folder: the next run is skipped, not an empty snapshot.
    skipped = pipeline.extract("RK-T-0005", iv2.start.isoformat(), iv2.end.isoformat(), conn=conn,
                               settings=settings)
    assert skipped["rows"] == 0 and skipped["skipped"].startswith("no new file")
    assert skipped["status"] == "skipped"
    from extractors.state import ExtractState
    from warehouse.engine import get_engine
    files = {f["file_name"]: f["status"] for f in ExtractState(get_engine(settings)).files("RK-T-0005")}
    assert files == {"people_1.csv": "processed", "people_2.csv": "processed", "people_3.csv": "processed",
                     "people_4.xlsx": "processed", "people_5.csv": "rejected", "people_6.csv": "rejected"}


def test_api_429_then_500_then_success_through_the_pipeline(tmp_path):
    from tests.test_extract_http import COMPANIES, Api

    answers = [(429, {"Retry-After": "0"}, {"error": "slow down"}), (500, {}, {"error": "boom"})]

    def respond(path, query, headers):
        if answers:
            return answers.pop(0)
        return 200, {}, {"data": COMPANIES[:3], "total_pages": 1}

    api = Api(respond)
    try:
        res = {"code": "FR-T-0001", "table": "companies", "name_zh": "企业", "name_en": "Companies", "unit": "psb",
               "system": "api", "location": {"endpoint": "/api/v1/enterprises", "pagination": "page"},
               "fields": [{"name": "uscc", "required": True}, {"name": "name"}, {"name": "updated_at",
                                                                                  "type": "datetime"}],
               "primary_key": ["uscc"], "update_cycle": "daily", "sharing": {"type": "unconditional"}}
        catalog = write_catalog(tmp_path / "catalog", [res], [{"code": "api", "name": "接口", "kind": "http",
                                                               "conn_id": "c_api"}])
        settings = settings_for(tmp_path, catalog)
        pipeline.prepare(settings)
        conn = {**api.conn().to_dict()}
        out = run_interval("FR-T-0001", D2, conn, settings)
        assert out["load"]["loaded"] == 3 and out["extract"]["engine"] == "http"
        assert [c[1].get("page") for c in api.calls] == ["1", "1", "1"]  # 429, 500, then 200
    finally:
        api.close()


def test_state_show_reset_and_backfill_from_the_cli(pg_url, tmp_path, monkeypatch):
    rows = [(i, f"人{i}", datetime(2026, 11, 20 + i % 3, 10)) for i in range(1, 31)]  # 20th, 21st, 22nd
    make_people(pg_url, rows)
    catalog = write_catalog(tmp_path / "catalog", [person("RK-T-0006", "people")],
                            [{"code": "huji", "name": "户籍", "kind": "sql", "conn_id": "c_psb"}])
    monkeypatch.setenv("DATARAIL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATARAIL_CATALOG", str(catalog))
    monkeypatch.setenv("AIRFLOW_CONN_C_PSB", json.dumps(sql_conn(pg_url)))
    from datarail.cli import main

    cli = CliRunner()
    out = cli.invoke(main, ["backfill", "psb", "RK-T-0006", "--from", "2026-11-20", "--to", "2026-11-22", "--json"])
    assert out.exit_code == 0, out.output
    days = json.loads(out.output)
    assert [d["extracted"] for d in days] == [10, 10, 10]
    assert [d["watermark_after"] for d in days] == ["2026-11-20 10:00:00", "2026-11-21 10:00:00",
                                                    "2026-11-22 10:00:00"]
    again = cli.invoke(main, ["backfill", "psb", "RK-T-0006", "--from", "2026-11-21", "--to", "2026-11-21", "--json"])
    assert json.loads(again.output)[0]["extracted"] == 10  # an interval's backfill gives the same rows

    shown = cli.invoke(main, ["state", "show", "RK-T-0006", "--json"])
    st = json.loads(shown.output)[0]
    assert st["committed_watermark"] == "2026-11-22 10:00:00"
    assert st["last_extract"]["status"] == "staged"
    text = cli.invoke(main, ["state", "show"]).output
    assert "RK-T-0006" in text and "watermark updated_at = 2026-11-22 10:00:00" in text

    reset = cli.invoke(main, ["state", "reset", "RK-T-0006", "--watermark", "2026-11-21 00:00:00", "--yes"])
    assert reset.exit_code == 0, reset.output
    st = json.loads(cli.invoke(main, ["state", "show", "RK-T-0006", "--json"]).output)[0]
    assert st["committed_watermark"] == "2026-11-21 00:00:00" and st["reset_at"]
    out = cli.invoke(main, ["backfill", "psb", "RK-T-0006", "--from", "2026-11-23", "--to", "2026-11-23", "--json"])
    assert json.loads(out.output)[0]["extracted"] == 20  # from the reset watermark: the 21st's and 22nd's rows
