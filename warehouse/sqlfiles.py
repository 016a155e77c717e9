"""Read and run the SQL files of ``warehouse_sql/``: one object per file, statements
separated by a ``;`` at the end of a line. Values are bound (``:name``), never formatted in."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

SQL_ROOT = Path(__file__).resolve().parent.parent / "warehouse_sql"


def sql_path(name: str) -> Path:
    path = SQL_ROOT / name
    if not path.suffix:
        path = path.with_suffix(".sql")
    if not path.is_file():
        raise FileNotFoundError(f"no SQL file {path}")
    return path


def statements(text: str) -> list[str]:
    """Split a SQL file into statements. Full-line ``--`` comments are dropped: a ``:name``
    in a comment would otherwise become a bind parameter that the database never sees."""
    out, buf = [], []
    for line in text.splitlines():
        if line.lstrip().startswith("--"):
            continue
        buf.append(line)
        if line.rstrip().endswith(";"):
            stmt = "\n".join(buf).strip().rstrip(";").strip()
            if any(ln.strip() and not ln.strip().startswith("--") for ln in stmt.splitlines()):
                out.append(stmt)
            buf = []
    rest = "\n".join(buf).strip()
    if any(ln.strip() and not ln.strip().startswith("--") for ln in rest.splitlines()):
        out.append(rest)
    return out


def run_file(conn: sa.Connection, name: str, params: dict | None = None) -> None:
    """Run every statement of a SQL file inside the caller's transaction."""
    for stmt in statements(sql_path(name).read_text(encoding="utf-8")):
        conn.execute(sa.text(stmt), params or {})


def query_file(conn: sa.Connection, name: str, params: dict | None = None) -> list[dict]:
    """Run a single-SELECT SQL file and return its rows as dicts."""
    stmts = statements(sql_path(name).read_text(encoding="utf-8"))
    if len(stmts) != 1:
        raise ValueError(f"{name}: expected one statement, found {len(stmts)}")
    return [dict(r._mapping) for r in conn.execute(sa.text(stmts[0]), params or {})]
