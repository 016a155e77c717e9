"""The sandbox: determinism, encodings, identifiers, cross-references, the API server, and
a manifest that matches what an independent recount finds in the files."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections import Counter
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest
import requests
import yaml
from stdnum.cn import ric, uscc

from catalog.models import CYCLE_DAYS, Catalog, Resource, Unit
from quality.divisions import load_divisions
from quality.identifiers import resident_id_problem, uscc_problem
from sandbox.api_server import SandboxApi, decode_cursor, encode_cursor, set_http_port
from sandbox.build import DEMO_TOKEN, build_sandbox

pytestmark = pytest.mark.unit

DEMO = Path(__file__).resolve().parent.parent / "catalog" / "demo"
RUN_DATE = date(2026, 11, 22)


def source_catalog() -> Catalog:
    """Units and resources of the demo catalog only (items and responsibilities are not
    the sandbox's concern)."""
    units = [Unit.model_validate(u) for u in yaml.safe_load((DEMO / "units.yaml").read_text("utf-8"))["units"]]
    resources = [Resource.model_validate(r) for p in sorted((DEMO / "resources").glob("*.yaml"))
                 for r in yaml.safe_load(p.read_text("utf-8"))["resources"]]
    return Catalog(units=tuple(units), resources=tuple(resources), responsibilities=(), items=())


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return source_catalog()


@pytest.fixture(scope="module")
def built(tmp_path_factory, catalog):
    out = tmp_path_factory.mktemp("sandbox")
    manifest = build_sandbox(catalog, out)
    return out, manifest


# --- reading the deliveries back (independently of the extractors) ---------------------------

def read_rows(out: Path, catalog: Catalog, res: Resource) -> list[dict]:
    """Rows of one resource as {field name: trimmed text or None}, in delivery order."""
    system = catalog.unit(res.unit).system(res.system)
    conns = json.loads((out / "connections.json").read_text("utf-8"))
    conn = conns[system.conn_id]
    names = [f.name for f in res.fields]
    sources = [f.source_name for f in res.fields]
    if system.kind == "sql":
        db = sqlite3.connect(conn["host"])
        cols = ", ".join(f'"{s}"' for s in sources)
        raw = db.execute(f'SELECT {cols} FROM "{res.location.table}"').fetchall()
        db.close()
        # SQLite hands numbers back as float/int; render them as a reader would.
        raw = [[None if v is None else str(v) for v in row] for row in raw]
    elif system.kind == "file":
        folder = Path(conn["extra"]["path"])
        (path,) = folder.glob(res.location.file)
        if path.suffix == ".csv":
            enc = {"utf-8": "utf-8-sig"}.get(res.location.encoding, res.location.encoding)
            reader = csv.reader(io.StringIO(path.read_bytes().decode(enc)))
            header = next(reader)
            assert header == sources
            raw = list(reader)
        else:
            from openpyxl import load_workbook

            wb = load_workbook(path, read_only=True, data_only=True)
            ws = wb[res.location.sheet] if res.location.sheet else wb.worksheets[0]
            it = ws.iter_rows(values_only=True)
            assert list(next(it)) == sources
            raw = []
            for row in it:
                cells = []
                for f, v in zip(res.fields, row, strict=True):
                    if isinstance(v, datetime):
                        v = v.date().isoformat() if f.type == "date" else v.strftime("%Y-%m-%d %H:%M:%S")
                    cells.append(None if v is None else str(v))
                raw.append(cells)
            wb.close()
    else:
        doc = json.loads((out / "api" / f"{res.unit}_{res.system}.json").read_text("utf-8"))
        records = doc["endpoints"][res.location.endpoint]["records"]
        raw = [[None if r[s] is None else str(r[s]) for s in sources] for r in records]
    out_rows = []
    for row in raw:
        vals = [None if v is None or str(v).strip() == "" else str(v).strip() for v in row]
        out_rows.append(dict(zip(names, vals, strict=True)))
    return out_rows


_DATE_SHAPES = [re.compile(p) for p in (r"^(\d{4})-(\d{1,2})-(\d{1,2})$", r"^(\d{4})/(\d{1,2})/(\d{1,2})$",
                                        r"^(\d{4})(\d{2})(\d{2})$", r"^(\d{4})年(\d{1,2})月(\d{1,2})日$")]


def parse_date(text: str) -> date:
    """The four date shapes of the spec (plus 'YYYY-MM-DD HH:MM:SS' for datetimes)."""
    if re.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$", text):
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").date()
    for shape in _DATE_SHAPES:
        m = shape.match(text)
        if m:
            return date(*map(int, m.groups()))  # ValueError for impossible dates
    raise ValueError(text)


PHONE = re.compile(r"^(?:1[3-9][0-9]{9}|0[0-9]{2,3}-?[0-9]{7,8})$")


def recount(res: Resource, rows: list[dict], register: set[str] | None = None) -> tuple[dict[str, int], int]:
    """Apply the spec's checks to raw rows: (failing rows per check id, rows quarantined).

    ``register``: resident IDs loaded from the household register, for the cross-resource
    ``exists:`` checks (which judge loaded rows only)."""
    from quality.suite import build_specs, change_column

    divisions = load_divisions()
    known = divisions.codes("historic")
    failed: dict[int, set[str]] = {i: set() for i in range(len(rows))}
    warnings = {"phone", "exists"}
    specs = build_specs(res, run_date=RUN_DATE, divisions=divisions)
    typed: list[dict] = [{} for _ in rows]
    for i, row in enumerate(rows):
        for f in res.fields:
            v = row[f.name]
            if f.type in ("date", "datetime") and v is not None:
                try:
                    d = parse_date(v)
                except ValueError:
                    failed[i].add(f"type:{f.name}")
                    continue
                lo = f.min or date(1900, 1, 1)
                if d < lo or (f.max_offset_days is not None and (d - RUN_DATE).days > f.max_offset_days):
                    failed[i].add(f"date_range:{f.name}")
                else:
                    typed[i][f.name] = d
            if f.type in ("integer", "decimal") and v is not None:
                try:
                    Decimal(v)
                except InvalidOperation:
                    failed[i].add(f"type:{f.name}")
                    continue
            if v is None:
                if f.required:
                    failed[i].add(f"not_null:{f.name}")
                continue
            if f.values and v not in f.values:
                failed[i].add(f"values:{f.name}")
            if f.semantic == "resident_id" and resident_id_problem(v, run_date=RUN_DATE, divisions=divisions):
                failed[i].add(f"resident_id:{f.name}")
            if f.semantic == "uscc" and uscc_problem(v):
                failed[i].add(f"uscc:{f.name}")
            if f.semantic == "division_code" and v not in known:
                failed[i].add(f"division_code:{f.name}")
            if f.semantic == "phone" and not PHONE.match(v):
                failed[i].add(f"phone:{f.name}")
        # GB 11643: the 17th character is odd for men; judged on valid IDs and 男/女 only.
        for s in (x for x in specs if x.kind == "id_gender"):
            rid = row[s.fields[0]]
            declared = s.params["gender"] or row.get(s.params["gender_field"])
            if rid and declared in ("男", "女") and f"resident_id:{s.fields[0]}" not in failed[i]:
                if ("男" if int(rid[16]) % 2 else "女") != declared:
                    failed[i].add(s.check_id)
        for s in (x for x in specs if x.kind == "date_order"):
            a, b = typed[i].get(s.params["earlier"]), typed[i].get(s.params["later"])
            if a is not None and b is not None and a > b:
                failed[i].add(s.check_id)
    keys = Counter(tuple(r[k] for k in res.primary_key) for r in rows)
    for i, row in enumerate(rows):
        if keys[tuple(row[k] for k in res.primary_key)] > 1:
            failed[i].add("unique:" + "+".join(res.primary_key))
    blocked = {i for i, s in failed.items() if any(c.split(":")[0] not in warnings for c in s)}
    for c in res.quality.checks:
        if c.kind == "exists" and c.ref == "RK-GA-0001" and register is not None:
            for i, row in enumerate(rows):
                if i not in blocked and row[c.field] is not None and row[c.field] not in register:
                    failed[i].add(f"exists:{c.field}")
    checks = Counter(c for s in failed.values() for c in s)
    column = change_column(res)
    stamps = [parse_date(r[column]) for r in rows if column and r[column]]
    if stamps and (RUN_DATE - max(stamps)).days > CYCLE_DAYS[res.update_cycle]:
        checks[f"freshness:{column}"] = 1
    return dict(checks), len(blocked)


# --- tests ---------------------------------------------------------------------------------------

def test_demo_resources_validate(catalog):
    assert {r.code for r in catalog.resources} >= {"RK-GA-0001", "RK-JY-0002", "FR-SC-0002", "FR-SW-0001"}
    assert catalog.resource("FR-SW-0001").status == "planned"
    assert catalog.resource("RK-GJJ-0002").sharing.type == "not_shared"


def test_manifest_matches_a_recount_of_the_files(built, catalog):
    out, manifest = built
    household = catalog.resource("RK-GA-0001")
    people = read_rows(out, catalog, household)
    _, _ = recount(household, people)
    bad = {d["key"]["resident_id"] for d in manifest["resources"]["RK-GA-0001"]["defects"]
           if d["severity"] == "blocking"}
    register = {r["resident_id"] for r in people if r["resident_id"] not in bad}
    for res in catalog.resources:
        entry = manifest["resources"][res.code]
        if res.status == "planned":
            assert entry["rows"] == 0
            continue
        rows = read_rows(out, catalog, res)
        checks, quarantined = recount(res, rows, register)
        assert len(rows) == entry["rows"], res.code
        assert checks == entry["checks"], res.code
        assert quarantined == entry["quarantined"], res.code
        assert sum(1 for d in entry["defects"] if d["severity"] == "blocking") + \
            entry["checks"].get("unique:" + "+".join(res.primary_key), 0) // 2 == quarantined, res.code


def test_defect_rates(built):
    _, manifest = built
    total = 0
    for code, entry in manifest["resources"].items():
        total += entry["rows"]
        if entry["rows"] == 0:
            continue
        share = entry["quarantined"] / entry["rows"]
        if code == "RK-JY-0002":
            assert 0.10 <= share <= 0.14  # the bad delivery fails the 95% threshold
        else:
            assert 0 < share < 0.045, code
        for d in entry["defects"]:
            assert set(d) == {"kind", "check", "field", "key", "severity"}
    assert 9_000 <= total <= 15_000


def test_stale_resource(built):
    _, m = built
    stale = {c for c, e in m["resources"].items() if e["stale"]}
    assert stale == {"RK-RS-0002"}
    assert m["resources"]["RK-RS-0002"]["latest_update"].startswith("2026-10-13")  # 40 days before
    assert m["resources"]["RK-GA-0001"]["latest_update"].startswith("2026-11-22")


def test_same_seed_same_bytes(built, catalog, tmp_path):
    out, manifest = built
    again = build_sandbox(catalog, tmp_path / "again")
    assert again == manifest
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()
                   and p.name != "connections.json")  # connections hold the absolute folder
    assert files == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*")
                           if p.is_file() and p.name != "connections.json")
    for rel in files:
        assert (out / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel


def test_other_seed_differs(catalog, tmp_path):
    a = build_sandbox(catalog, tmp_path / "a", seed=1, scale=0.2)
    b = build_sandbox(catalog, tmp_path / "b", seed=2, scale=0.2)
    assert a["resources"]["RK-GA-0001"]["defects"] != b["resources"]["RK-GA-0001"]["defects"]
    assert (tmp_path / "a/drop/edu_drop/degree_2026-11.csv").read_bytes() != \
        (tmp_path / "b/drop/edu_drop/degree_2026-11.csv").read_bytes()


@pytest.mark.parametrize("name, encoding, not_as", [
    ("edu_drop/degree_2026-11.csv", "gbk", "utf-8"),
    ("nhc_drop/birth_2026-11.csv", "gb18030", "gbk"),  # newborn names outside GBK
])
def test_file_encodings(built, name, encoding, not_as):
    data = (built[0] / "drop" / name).read_bytes()
    data.decode(encoding)
    with pytest.raises(UnicodeDecodeError):
        data.decode(not_as)


def test_student_file_has_bom_and_mixed_date_shapes(built):
    data = (built[0] / "drop/edu_drop/student_2026-11.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8-sig")
    for shape in (r",\d{4}-\d{2}-\d{2},", r",\d{4}/\d{1,2}/\d{1,2},", r",\d{8},", r",\d{4}年\d{1,2}月\d{1,2}日,"):
        assert re.search(shape, text), shape


def _defective_keys(entry: dict) -> set[tuple]:
    return {tuple(d["key"].values()) for d in entry["defects"] if d["severity"] == "blocking"}


def test_identifiers_in_valid_rows_pass_stdnum(built, catalog):
    out, manifest = built
    for code in ("RK-GA-0001", "RK-MZ-0001", "FR-SC-0001", "RK-RS-0001"):
        res = catalog.resource(code)
        bad = _defective_keys(manifest["resources"][code])
        for row in read_rows(out, catalog, res):
            if tuple(row[k] for k in res.primary_key) in bad:
                continue
            for f in res.fields:
                if row[f.name] is None:
                    continue
                if f.semantic == "resident_id":
                    assert ric.is_valid(row[f.name]), (code, f.name)
                if f.semantic == "uscc":
                    assert uscc.is_valid(row[f.name]), (code, f.name)
            if code == "RK-GA-0001":  # GB 11643: an odd sequence code means male
                assert (int(row["resident_id"][16]) % 2 == 1) == (row["gender"] == "男")


def test_injected_check_characters_fail_stdnum(built):
    _, manifest = built
    seen = Counter()
    for entry in manifest["resources"].values():
        for d in entry["defects"]:
            if d["kind"] != "bad_check":
                continue
            seen[d["check"].split(":")[0]] += 1
            value = d["key"].get(d["field"])
            if value is None:
                continue  # the damaged field is not part of the key
            valid = ric.is_valid(value) if d["check"].startswith("resident_id:") else uscc.is_valid(value)
            assert not valid
    assert seen["resident_id"] >= 10 and seen["uscc"] >= 3


def test_marriage_partners_exist_in_household_register(built, catalog):
    out, manifest = built
    people = {r["resident_id"]: r for r in read_rows(out, catalog, catalog.resource("RK-GA-0001"))}
    entry = manifest["resources"]["RK-MZ-0001"]
    bad = _defective_keys(entry) | {tuple(d["key"].values()) for d in entry["defects"] if d["kind"] == "orphan_ref"}
    bad |= {tuple(c["key"].values()) for c in entry["conflicts"]}  # seeded disagreements on a name
    assert sum(d["kind"] == "orphan_ref" for d in entry["defects"]) == entry["checks"]["exists:male_id"] >= 1
    checked = 0
    for row in read_rows(out, catalog, catalog.resource("RK-MZ-0001")):
        if (row["cert_no"],) in bad:
            continue
        male, female = people[row["male_id"]], people[row["female_id"]]
        assert (male["gender"], female["gender"]) == ("男", "女")
        assert (male["name"], female["name"]) == (row["male_name"], row["female_name"])
        checked += 1
    assert checked > 400


@pytest.mark.parametrize("code, fields", [
    ("RK-WJ-0001", ["mother_id", "father_id"]),
    ("RK-RS-0001", ["resident_id"]),
    ("RK-JY-0002", ["resident_id"]),
    ("FR-SC-0001", ["legal_rep_id"]),
])
def test_people_referenced_exist_in_household_register(built, catalog, code, fields):
    out, manifest = built
    people = {r["resident_id"] for r in read_rows(out, catalog, catalog.resource("RK-GA-0001"))}
    res = catalog.resource(code)
    bad = _defective_keys(manifest["resources"][code])
    for row in read_rows(out, catalog, res):
        if tuple(row[k] for k in res.primary_key) not in bad:
            assert all(row[f] in people for f in fields if row[f]), (code, fields)


@pytest.mark.parametrize("code", ["FR-SC-0002", "FR-FG-0001"])
def test_companies_referenced_exist_in_business_register(built, catalog, code):
    out, manifest = built
    registry = manifest["resources"]["FR-SC-0001"]
    damaged = {d["key"]["uscc"] for d in registry["defects"] if d["severity"] == "blocking"}
    companies = {r["uscc"] for r in read_rows(out, catalog, catalog.resource("FR-SC-0001"))} - damaged
    res = catalog.resource(code)
    bad = _defective_keys(manifest["resources"][code])
    rows = [r for r in read_rows(out, catalog, res) if tuple(r[k] for k in res.primary_key) not in bad]
    assert rows
    assert all(row["uscc"] in companies for row in rows), code


def test_credit_records_follow_the_registry(built, catalog):
    """The credit platform's records: licences, penalties and red / black lists of registered
    companies under the registry's name and representative (bar the seeded conflicts); a
    revoked company carries the revocation penalty and sits on the black list."""
    out, manifest = built
    registry = {r["uscc"]: r for r in read_rows(out, catalog, catalog.resource("FR-SC-0001"))}
    entry = manifest["resources"]["FR-FG-0001"]
    bad = _defective_keys(entry)
    seeded = {(c["key"]["decision_no"], c["field"]) for c in entry["conflicts"]}
    rows = [r for r in read_rows(out, catalog, catalog.resource("FR-FG-0001")) if (r["decision_no"],) not in bad]
    assert Counter(r["record_type"] for r in rows).keys() == {"行政许可", "行政处罚", "红名单", "黑名单"}
    for r in rows:
        company = registry[r["uscc"]]
        for field, reg_field in (("entity_name", "name"), ("legal_rep_name", "legal_rep_name")):
            assert (r[field] == company[reg_field]) != ((r["decision_no"], field) in seeded), (r["decision_no"], field)
    revoked = {u for u, c in registry.items() if c["status"] == "吊销"} - {tuple(d["key"].values())[0] for d in
                                                                         manifest["resources"]["FR-SC-0001"]["defects"]}
    black = {r["uscc"] for r in read_rows(out, catalog, catalog.resource("FR-FG-0001")) if r["record_type"] == "黑名单"}
    assert revoked and revoked <= black
    inactive = {u for u, c in registry.items() if c["status"] in ("注销", "迁出")}
    assert not inactive & {r["uscc"] for r in rows}


def test_seeded_conflicts_load_and_disagree_with_the_register(built, catalog):
    """Each seeded disagreement sits on a row without defects, changes one attribute of one
    subject, and the authoritative register still holds the value it replaced."""
    from sandbox.build import CONFLICTS

    out, manifest = built
    people = {r["resident_id"]: r for r in read_rows(out, catalog, catalog.resource("RK-GA-0001"))}
    companies = {r["uscc"]: r for r in read_rows(out, catalog, catalog.resource("FR-SC-0001"))}
    register_field = {("population", "name"): "name", ("population", "birth_date"): "birth_date",
                      ("population", "address"): "address", ("legal_entity", "name"): "name",
                      ("legal_entity", "legal_rep_name"): "legal_rep_name", ("legal_entity", "address"): "address"}
    seen = Counter()
    for code in CONFLICTS:
        res = catalog.resource(code)
        entry = manifest["resources"][code]
        by_key = {tuple(r[k] for k in res.primary_key): r for r in read_rows(out, catalog, res)}
        assert not {tuple(c["key"].values()) for c in entry["conflicts"]} & _defective_keys(entry), code
        for c in entry["conflicts"]:
            row = by_key[tuple(c["key"].values())]
            register = people if c["library"] == "population" else companies
            held = register[c["subject"]][register_field[(c["library"], c["attribute"])]]
            if c["attribute"] == "birth_date":
                row_value, held = parse_date(row[c["field"]]).isoformat(), parse_date(held).isoformat()
            else:
                row_value = row[c["field"]]
            assert row_value == c["value"] != c["was"] == held, (code, c["field"])
            seen[(code, c["library"], c["attribute"])] += 1
        subjects = [(c["attribute"], c["subject"]) for c in entry["conflicts"]]
        assert len(subjects) == len(set(subjects)), code  # one disagreement per subject and attribute
    assert seen == Counter({(code, lib, attr): n for code, plan in CONFLICTS.items() for lib, attr, _, _, n in plan})


def test_planned_resource_has_an_empty_table(built):
    db = sqlite3.connect(json.loads((built[0] / "connections.json").read_text())["sandbox_tax_etax"]["host"])
    assert db.execute("SELECT COUNT(*) FROM ss_nsxx").fetchone() == (0,)


def test_connections(built):
    out, _ = built
    conns = json.loads((out / "connections.json").read_text("utf-8"))
    assert conns["sandbox_psb_huji"]["conn_type"] == "sqlite"
    assert Path(conns["sandbox_psb_huji"]["host"]).is_absolute()
    assert conns["sandbox_edu_drop"] == {"conn_type": "fs", "host": None, "port": None, "login": None,
                                         "password": None, "schema": None,
                                         "extra": {"path": str(out / "drop" / "edu_drop")}}
    assert conns["sandbox_amr_api"]["port"] is None and conns["sandbox_amr_api"]["extra"] == {"token": DEMO_TOKEN}


def test_refuses_to_wipe_a_foreign_folder(catalog, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(Exception, match="refusing to wipe"):
        build_sandbox(catalog, tmp_path, scale=0.05)
    assert (tmp_path / "precious.txt").exists()


@pytest.mark.parametrize("offset", [0, 1, 99, 12345])
def test_cursor_round_trip(offset):
    assert decode_cursor(encode_cursor(offset)) == offset


def test_api_pages_both_ways_and_needs_a_token(built, catalog):
    out, manifest = built
    auth = {"Authorization": f"Bearer {DEMO_TOKEN}"}
    with SandboxApi(out / "api") as api:
        base = api.base_url
        r = requests.get(f"{base}/api/v1/enterprises", timeout=5)
        assert r.status_code == 401 and "error" in r.json()
        r = requests.get(f"{base}/api/v1/enterprises", headers={"Authorization": "Bearer wrong"}, timeout=5)
        assert r.status_code == 401

        # page pagination
        got, page = [], 1
        while True:
            body = requests.get(f"{base}/api/v1/enterprises", params={"page": page, "page_size": 70},
                                headers=auth, timeout=5).json()
            got += body["data"]
            if page >= body["total_pages"]:
                break
            page += 1
        total = manifest["resources"]["FR-SC-0001"]["rows"]
        assert body["total"] == total == len(got) and body["total_pages"] == -(-total // 70)
        assert got[0]["entName"] and isinstance(got[0]["uscc"], str)

        # cursor pagination
        got, cursor, calls = [], None, 0
        while True:
            params = {"limit": 50} | ({"cursor": cursor} if cursor else {})
            body = requests.get(f"{base}/api/v1/licences", params=params, headers=auth, timeout=5).json()
            got += body["data"]
            calls += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert len(got) == manifest["resources"]["FR-SC-0002"]["rows"]
        assert len({json.dumps(g, sort_keys=True) for g in got}) == len(got)
        assert calls == -(-len(got) // 50)

        # updated_since filters on the update time
        body = requests.get(f"{base}/api/v1/enterprises", params={"updated_since": "2026-11-22", "page_size": 1000},
                            headers=auth, timeout=5).json()
        assert 0 < body["total"] < total
        assert all(rec["updateTime"] >= "2026-11-22" for rec in body["data"])

        assert requests.get(f"{base}/api/v1/licences", params={"cursor": "!!"}, headers=auth,
                            timeout=5).status_code == 400
        assert requests.get(f"{base}/api/v1/nothing", headers=auth, timeout=5).status_code == 404
        conns = set_http_port(out / "connections.json", api.port)
        assert conns["sandbox_amr_api"]["port"] == api.port
    set_http_port(out / "connections.json", None)  # leave the module fixture as built
