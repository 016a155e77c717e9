"""Seeded generator of the benchmark's ``population`` table (id, id_card, name, gender,
birth_date, region_code, address, phone, updated_at; Chinese text) and its loading into a
MariaDB database with ``LOAD DATA LOCAL INFILE`` (the fastest honest way to make 5M rows).

Rows are generated in blocks with NumPy, so 5M rows cost seconds and little memory; the
same ``seed`` and id range always give the same rows (each block's generator is seeded by
``seed`` and the block's first id), so the 5M table is the 1M table plus 4M more rows.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BLOCK = 250_000
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈") + ["欧阳", "司马", "诸葛"]
GIVEN = list("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国文辉玲红梅鑫宇浩然子轩欣怡晨梓涵一诺")
REGIONS = ["330102", "330105", "330106", "330108", "330109", "330110", "330203", "330205", "330206",
           "330302", "330303", "330402", "330502", "330602", "330702", "330782", "330802", "330902",
           "331002", "331102"]
CITIES = {"3301": "杭州市", "3302": "宁波市", "3303": "温州市", "3304": "嘉兴市", "3305": "湖州市",
          "3306": "绍兴市", "3307": "金华市", "3308": "衢州市", "3309": "舟山市", "3310": "台州市",
          "3311": "丽水市"}
ROADS = ["解放路", "延安路", "中山北路", "文三路", "学院路", "人民大道", "江南大道", "环城西路", "庆春路", "凤起路"]
PREFIXES = ["130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "158", "159",
            "177", "180", "186", "188", "189", "199"]
WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
CHECK = np.array(list("10X98765432"))
BASE_TIME = datetime(2026, 11, 22, 0, 0, 0)
COLUMNS = ["id", "id_card", "name", "gender", "birth_date", "region_code", "address", "phone", "updated_at"]

DDL = """CREATE TABLE population (
  id BIGINT NOT NULL PRIMARY KEY,
  id_card CHAR(18) NOT NULL,
  name VARCHAR(20) NOT NULL,
  gender VARCHAR(2) NOT NULL,
  birth_date DATE,
  region_code CHAR(6),
  address VARCHAR(120),
  phone VARCHAR(20),
  updated_at DATETIME NOT NULL,
  KEY ix_population_updated_at (updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""


def block(first_id: int, n: int, seed: int) -> list[np.ndarray]:
    """Columns of rows ``first_id .. first_id + n - 1`` as string arrays (TSV-ready)."""
    rng = np.random.default_rng([seed, first_id])
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    region = np.array(REGIONS)[rng.integers(0, len(REGIONS), n)]
    birth = np.datetime64("1940-01-01") + rng.integers(0, 365 * 80, n).astype("timedelta64[D]")
    birth_s = birth.astype(str)
    ymd = np.char.replace(birth_s, "-", "")
    seq = rng.integers(0, 1000, n)
    male = (seq % 2) == 1
    body = np.char.add(np.char.add(region, ymd), np.char.zfill(seq.astype(str), 3))
    digits = body.view("<U1").reshape(n, 17).astype(np.int64)
    id_card = np.char.add(body, CHECK[(digits @ WEIGHTS) % 11])
    surname = np.array(SURNAMES)[rng.integers(0, len(SURNAMES), n)]
    g1 = np.array(GIVEN)[rng.integers(0, len(GIVEN), n)]
    g2 = np.where(rng.random(n) < 0.6, np.array(GIVEN)[rng.integers(0, len(GIVEN), n)], "")
    name = np.char.add(np.char.add(surname, g1), g2)
    gender = np.where(male, "男", "女")
    city = np.array([CITIES[r[:4]] for r in REGIONS])[np.searchsorted(np.array(REGIONS), region)]
    road = np.array(ROADS)[rng.integers(0, len(ROADS), n)]
    num = rng.integers(1, 999, n).astype(str)
    address = np.char.add(np.char.add(np.char.add(np.char.add("浙江省", city), road), num), "号")
    phone = np.char.add(np.array(PREFIXES)[rng.integers(0, len(PREFIXES), n)],
                        np.char.zfill(rng.integers(0, 100_000_000, n).astype(str), 8))
    # updated_at: within the year before BASE_TIME
    secs = rng.integers(1, 365 * 86400, n).astype("timedelta64[s]")
    updated = (np.datetime64(BASE_TIME, "s") - secs).astype(str)
    updated = np.char.replace(updated, "T", " ")
    return [ids.astype(str), id_card, name, gender, birth_s, region, address, phone, updated]


def write_tsv(path: Path, first_id: int, n: int, seed: int) -> None:
    """Write rows ``first_id ..`` as a tab-separated file (no header, no quoting needed)."""
    with path.open("w", encoding="utf-8") as fh:
        for start in range(first_id, first_id + n, BLOCK):
            cols = block(start, min(BLOCK, first_id + n - start), seed)
            lines = cols[0]
            for c in cols[1:]:
                lines = np.char.add(np.char.add(lines, "\t"), c)
            fh.write("\n".join(lines.tolist()))
            fh.write("\n")


def mariadb_cmd(database: str | None = None, host: str = "127.0.0.1", port: int = 3306,
                user: str = "root") -> list[str]:
    """The ``mariadb`` client command line for the bench server."""
    cmd = ["mariadb", f"-h{host}", f"-P{port}", f"-u{user}", "--local-infile=1", "--default-character-set=utf8mb4"]
    return cmd + ([database] if database else [])


def create_database(database: str) -> None:
    """Create (or recreate) the throwaway bench database with an empty ``population`` table."""
    subprocess.run(mariadb_cmd(), input=f"DROP DATABASE IF EXISTS `{database}`; "
                   f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4;", text=True, check=True)
    subprocess.run(mariadb_cmd(database), input=DDL + ";", text=True, check=True)


def drop_database(database: str) -> None:
    """Drop the throwaway bench database."""
    subprocess.run(mariadb_cmd(), input=f"DROP DATABASE IF EXISTS `{database}`;", text=True, check=True)


def load_rows(database: str, first_id: int, n: int, seed: int) -> None:
    """Append rows ``first_id .. first_id + n - 1`` to ``population``."""
    with tempfile.TemporaryDirectory(prefix="datarail_bench_") as tmp:
        path = Path(tmp) / "population.tsv"
        write_tsv(path, first_id, n, seed)
        sql = (f"SET unique_checks=0; LOAD DATA LOCAL INFILE '{path}' INTO TABLE population "
               "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n' "
               f"({', '.join(COLUMNS)});")
        subprocess.run(mariadb_cmd(database), input=sql, text=True, check=True)
    log.info("population: loaded ids %d..%d", first_id, first_id + n - 1)


def touch_rows(database: str, fraction: float, at: datetime, seed: int) -> int:
    """Change ``fraction`` of the rows (new address, ``updated_at = at``); return how many."""
    step = max(int(round(1 / fraction)), 1)
    sql = (f"UPDATE population SET address = CONCAT(address, '（变更）'), updated_at = '{at:%Y-%m-%d %H:%M:%S}' "
           f"WHERE MOD(id + {seed % step}, {step}) = 0; SELECT ROW_COUNT();")
    out = subprocess.run(mariadb_cmd(database) + ["-N", "-B"], input=sql, text=True, check=True,
                         capture_output=True).stdout.split()
    return int(out[-1]) if out else 0
