"""HTTP extractor against a local http.server in a thread: pagination, retries, auth, watermark."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pyarrow.parquet as pq
import pytest

from catalog.models import Resource
from datarail.errors import ExtractError, SchemaDriftError
from datarail.interval import Interval
from extractors.base import ConnInfo
from extractors.http import ApiClient, RateLimiter, base_url, extract_http

pytestmark = pytest.mark.unit

INTERVAL = Interval.daily(date(2026, 11, 22))
FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.01}

COMPANIES = [
    {"uscc": f"91330100MA2{i:07d}", "name": f"杭州示例{i}号有限公司", "status": "存续",
     "updated_at": f"2026-11-{18 + i:02d} 09:00:00", "extra_key": "ignored"}
    for i in range(1, 6)
]  # updated_at 19th .. 23rd: the last one is after the interval


class Api:
    """A tiny JSON API: ``respond(path, query, headers) -> (status, headers, body)``; records calls."""

    def __init__(self, respond: Callable[[str, dict, dict], tuple[int, dict, object]]):
        self.respond = respond
        self.calls: list[tuple[str, dict, dict]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                headers = dict(self.headers)
                api.calls.append((parts.path, query, headers))
                status, extra_headers, body = api.respond(parts.path, query, headers)
                data = json.dumps(body, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra_headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def conn(self, **extra) -> ConnInfo:
        return ConnInfo(conn_type="http", host="127.0.0.1", port=self.port, extra={**FAST, **extra})

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve():
    servers: list[Api] = []

    def start(respond):
        api = Api(respond)
        servers.append(api)
        return api

    yield start
    for s in servers:
        s.close()


def make_resource(pagination: str | None = "page", *, watermark: bool = False, lookback: int = 0,
                  endpoint: str = "/api/v1/enterprises", records_key: str = "data") -> Resource:
    return Resource.model_validate({
        "code": "FR-SC-0001", "table": "business_registration", "name_zh": "企业登记信息",
        "name_en": "Business registration", "unit": "amr", "system": "api",
        "location": {"endpoint": endpoint, "pagination": pagination, "records_key": records_key},
        "fields": [
            {"name": "uscc", "required": True, "semantic": "uscc"},
            {"name": "name", "source": "name"},
            {"name": "entity_status", "source": "status"},
            {"name": "legal_rep_name", "semantic": "person_name"},  # absent from the API: null
            {"name": "updated_at", "type": "datetime"},
        ],
        "primary_key": ["uscc"],
        "change_tracking": ({"mode": "watermark", "column": "updated_at", "lookback_days": lookback}
                            if watermark else {"mode": "snapshot"}),
        "update_cycle": "daily", "sharing": {"type": "unconditional"},
    })


def run(resource, conn, out, *, since=None, chunk_rows=1000):
    return extract_http(resource, conn, INTERVAL, out, since=since, chunk_rows=chunk_rows)


def staged(result) -> list[dict]:
    rows: list[dict] = []
    for f in result.files:
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def page_api(records, *, total_pages: bool = True):
    def respond(path, q, headers):
        page, size = int(q["page"]), int(q["page_size"])
        chunk = records[(page - 1) * size: page * size]
        body = {"data": chunk, "page": page}
        if total_pages:
            body["total_pages"] = -(-len(records) // size)
        return 200, {}, body
    return respond


# ----------------------------------------------------------------------------- pagination

@pytest.mark.parametrize(("total_pages", "requests"), [(True, 3), (False, 4)])
def test_page_pagination(serve, tmp_path, total_pages, requests):
    api = serve(page_api(COMPANIES, total_pages=total_pages))
    res = run(make_resource("page"), api.conn(page_size=2), tmp_path / "out")
    rows = staged(res)
    assert [r["uscc"] for r in rows] == [c["uscc"] for c in COMPANIES]
    assert [r["_source"] for r in rows] == ["page 1", "page 1", "page 2", "page 2", "page 3"]
    assert [r["_row"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["name"] == "杭州示例1号有限公司" and rows[0]["entity_status"] == "存续"
    assert all(r["legal_rep_name"] is None for r in rows)
    assert len(api.calls) == requests and api.calls[0][0] == "/api/v1/enterprises"


@pytest.mark.parametrize(("n", "requests"), [(5, 3), (4, 3)])
def test_offset_pagination_stops_on_a_short_page(serve, tmp_path, n, requests):
    def respond(path, q, headers):
        off, lim = int(q["offset"]), int(q["limit"])
        return 200, {}, {"data": COMPANIES[:n][off: off + lim]}
    api = serve(respond)
    res = run(make_resource("offset"), api.conn(page_size=2), tmp_path / "out")
    assert [r["uscc"] for r in staged(res)] == [c["uscc"] for c in COMPANIES[:n]]
    assert [c[1]["offset"] for c in api.calls] == ["0", "2", "4"][:requests]


def test_cursor_pagination_follows_next_cursor(serve, tmp_path):
    cursors = {None: (COMPANIES[0:2], "c2"), "c2": (COMPANIES[2:4], "c3"), "c3": (COMPANIES[4:], None)}

    def respond(path, q, headers):
        records, nxt = cursors[q.get("cursor")]
        return 200, {}, {"data": records, "next_cursor": nxt}
    api = serve(respond)
    res = run(make_resource("cursor", endpoint="/api/v1/licences"), api.conn(page_size=2), tmp_path / "out")
    rows = staged(res)
    assert [r["uscc"] for r in rows] == [c["uscc"] for c in COMPANIES]
    assert [r["_source"] for r in rows][::2] == ["cursor page 1", "cursor page 2", "cursor page 3"]
    assert [c[1].get("cursor") for c in api.calls] == [None, "c2", "c3"]
    assert all(c[1]["limit"] == "2" for c in api.calls)


def test_repeating_cursor_is_an_error(serve, tmp_path):
    api = serve(lambda p, q, h: (200, {}, {"data": COMPANIES[:1], "next_cursor": "same"}))
    with pytest.raises(ExtractError, match="next_cursor repeats"):
        run(make_resource("cursor"), api.conn(page_size=1), tmp_path / "out")


# ----------------------------------------------------------------------------- retries and errors

def test_429_then_500_then_200_succeeds(serve, tmp_path):
    answers = [(429, {"Retry-After": "0"}, {"error": "slow down"}), (500, {}, {"error": "boom"}),
               (200, {}, {"data": COMPANIES[:2]})]
    api = serve(lambda p, q, h: answers[min(len(api.calls), len(answers)) - 1])
    res = run(make_resource(None), api.conn(), tmp_path / "out")
    assert res.rows == 2 and len(api.calls) == 3


def test_retries_give_up_after_max_attempts(serve, tmp_path):
    api = serve(lambda p, q, h: (503, {}, {}))
    with pytest.raises(ExtractError) as err:
        run(make_resource("page"), api.conn(max_attempts=3, page_size=2), tmp_path / "out")
    assert f"http://127.0.0.1:{api.port}/api/v1/enterprises?page=1&page_size=2" in str(err.value)
    assert "after 3 attempts: HTTP 503" in str(err.value) and len(api.calls) == 3
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_unreachable_server_is_retried_then_an_extract_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    conn = ConnInfo(conn_type="http", host="127.0.0.1", port=port, extra={**FAST, "max_attempts": 2})
    with pytest.raises(ExtractError, match="after 2 attempts: ConnectionError"):
        run(make_resource(None), conn, tmp_path / "out")


@pytest.mark.parametrize("status", [401, 403, 404])
def test_client_errors_are_not_retried_and_name_url_and_status(serve, tmp_path, status):
    api = serve(lambda p, q, h: (status, {}, {"error": "no"}))
    conn = ConnInfo(conn_type="http", host="127.0.0.1", port=api.port, login="amr", password="pa55word",
                    extra={**FAST, "page_size": 2})
    with pytest.raises(ExtractError) as err:
        run(make_resource("page"), conn, tmp_path / "out")
    msg = str(err.value)
    url = f"http://127.0.0.1:{api.port}/api/v1/enterprises?page=1&page_size=2"
    assert f"GET {url} answered HTTP {status}" in msg
    assert "pa55word" not in msg and "amr:" not in msg and len(api.calls) == 1
    if status == 401:
        assert "credentials" in msg


@pytest.mark.parametrize(("extra", "login", "expected"), [
    ({"token": "s3cret-token"}, None, "Bearer s3cret-token"),
    ({}, ("amr", "pa55word"), "Basic " + base64.b64encode(b"amr:pa55word").decode()),
])
def test_credentials_are_sent(serve, tmp_path, extra, login, expected):
    def respond(path, q, headers):
        if headers.get("Authorization") != expected:
            return 401, {}, {"error": "unauthorised"}
        return 200, {}, {"data": COMPANIES[:1]}
    api = serve(respond)
    conn = ConnInfo(conn_type="http", host="127.0.0.1", port=api.port, login=login and login[0],
                    password=login and login[1], extra={**FAST, **extra})
    assert run(make_resource(None), conn, tmp_path / "out").rows == 1


def test_missing_required_key_is_schema_drift(serve, tmp_path):
    api = serve(lambda p, q, h: (200, {}, {"data": [{"code": "x", "name": "y"}]}))
    with pytest.raises(SchemaDriftError, match="endpoint /api/v1/enterprises lacks required column.*uscc"):
        run(make_resource(None), api.conn(), tmp_path / "out")


def test_missing_records_key_is_an_error(serve, tmp_path):
    api = serve(lambda p, q, h: (200, {}, {"items": []}))
    with pytest.raises(ExtractError, match="the answer has no 'data' key"):
        run(make_resource(None), api.conn(), tmp_path / "out")


# ----------------------------------------------------------------------------- watermark, limits

@pytest.mark.parametrize(("since", "lookback", "sent", "expected"), [
    (None, 0, None, [1, 2, 3, 4]),
    ("2026-11-20 09:00:00", 0, "2026-11-20T09:00:00", [3, 4]),
    ("2026-11-20 09:00:00", 1, "2026-11-19T09:00:00", [2, 3, 4]),
])
def test_watermark_sends_updated_since_and_stops_at_the_interval_end(serve, tmp_path, since, lookback,
                                                                     sent, expected):
    # The API ignores updated_since here; the extractor must still keep only the window.
    api = serve(page_api(COMPANIES))
    res = run(make_resource("page", watermark=True, lookback=lookback), api.conn(page_size=10),
              tmp_path / "out", since=since)
    assert api.calls[0][1].get("updated_since") == sent
    assert [r["uscc"] for r in staged(res)] == [COMPANIES[i - 1]["uscc"] for i in expected]
    assert res.watermark_before == since and res.watermark_after == "2026-11-22 09:00:00"


def test_rate_limiter_spaces_calls():
    now = [0.0]
    slept: list[float] = []

    def sleep(s):
        slept.append(round(s, 6))
        now[0] += s
    limiter = RateLimiter(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.wait()
    now[0] += 1.0  # idle for a second: no wait needed
    limiter.wait()
    assert slept == [0.25, 0.25]


def test_rate_limit_applies_to_real_requests(serve, tmp_path):
    import time
    api = serve(page_api(COMPANIES))
    started = time.monotonic()
    run(make_resource("page"), api.conn(page_size=2, rate_limit_per_s=20), tmp_path / "out")
    assert len(api.calls) == 3 and time.monotonic() - started >= 2 / 20 * 0.9


@pytest.mark.parametrize(("attempt", "expected"), [(1, 0.5), (2, 1.0), (3, 2.0), (9, 30.0)])
def test_exponential_backoff_is_capped(attempt, expected):
    client = ApiClient(ConnInfo(conn_type="http", host="x"))
    assert client._backoff(attempt) == expected


@pytest.mark.parametrize(("conn", "expected"), [
    (ConnInfo("http", host="api.amr.example", port=8443, schema="https"), "https://api.amr.example:8443"),
    (ConnInfo("http", host="api.amr.example"), "http://api.amr.example"),
    (ConnInfo("http", host="user:pw@api.amr.example", port=80), "http://api.amr.example:80"),
])
def test_base_url(conn, expected):
    assert base_url(conn) == expected
