"""``datarail backfill`` resolves Airflow connections without Airflow: AIRFLOW_CONN_<ID> in
URI or JSON form, else the sandbox's connections.json."""

from __future__ import annotations

import json

import click
import pytest

from datarail.commands.extraction import resolve_connection
from datarail.settings import load_settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("value", "expected"), [
    ("mysql://u%40x:p%2Fw@db.example:3307/huji?charset=utf8mb4",
     {"conn_type": "mysql", "host": "db.example", "port": 3307, "login": "u@x", "password": "p/w",
      "schema": "huji", "extra": {"charset": "utf8mb4"}}),
    ('{"conn_type": "fs", "extra": "{\\"path\\": \\"/drop\\"}"}', {"conn_type": "fs", "extra": {"path": "/drop"}}),
    ("http://api.example?__extra__=%7B%22token%22%3A+%22t%22%7D",
     {"conn_type": "http", "host": "api.example", "port": None, "login": None, "password": None, "schema": None,
      "extra": {"token": "t"}}),
])
def test_connection_from_the_environment(monkeypatch, tmp_path, value, expected):
    monkeypatch.setenv("AIRFLOW_CONN_SRC_X", value)
    assert resolve_connection(load_settings({"DATARAIL_HOME": str(tmp_path)}), "src_x") == expected


def test_connection_from_the_sandbox_file_or_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW_CONN_SRC_Y", raising=False)
    settings = load_settings({"DATARAIL_HOME": str(tmp_path)})
    with pytest.raises(click.ClickException, match="AIRFLOW_CONN_SRC_Y"):
        resolve_connection(settings, "src_y")
    settings.connections_file.parent.mkdir(parents=True)
    settings.connections_file.write_text(json.dumps({"src_y": {"conn_type": "sqlite", "host": "/x.db"}}))
    assert resolve_connection(settings, "src_y") == {"conn_type": "sqlite", "host": "/x.db"}
