"""A small threaded HTTP server for the sandbox's JSON APIs (stdlib only).

It serves every ``<unit>_<system>.json`` file that :func:`sandbox.build.build_sandbox`
wrote to ``out_dir/api``. Each endpoint pages like the real system it stands for:

- ``pagination: page``   ``GET /path?page=1&page_size=100`` ->
  ``{"data": [...], "page": 1, "page_size": 100, "total": N, "total_pages": P}``
- ``pagination: cursor`` ``GET /path?limit=100&cursor=<opaque>`` ->
  ``{"data": [...], "next_cursor": "..." | null}``

Every data request needs ``Authorization: Bearer <token>`` (401 otherwise). The optional
``updated_since`` parameter (``2026-11-21`` or ``2026-11-21 08:00:00``) keeps records whose
update time is at or after it. ``GET /health`` answers without a token.

Run standalone: ``python -m sandbox.api_server var/sandbox/api --port 8765``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import threading
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from datarail.errors import DatarailError

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def _demo_token() -> str:
    from sandbox.build import DEMO_TOKEN

    return DEMO_TOKEN


def load_endpoints(api_dir: Path) -> dict[str, dict]:
    """Endpoints of every API file in ``api_dir``: path -> {pagination, records_key,
    updated_at_key, records}."""
    endpoints: dict[str, dict] = {}
    files = sorted(Path(api_dir).glob("*.json"))
    if not files:
        raise DatarailError(f"no API files in {api_dir}", hint="run `datarail sandbox build` first")
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        for route, spec in doc["endpoints"].items():
            if route in endpoints:
                raise DatarailError(f"endpoint {route} defined twice (second in {path.name})")
            endpoints[route] = spec
    return endpoints


def _parse_time(text: str) -> datetime:
    text = text.strip().replace("T", " ")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ValueError(text)


def encode_cursor(offset: int) -> str:
    """Opaque cursor for a record offset (clients must not build these themselves)."""
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Offset of a cursor from :func:`encode_cursor`; ``ValueError`` if it is not one."""
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    if not raw.startswith("o:"):
        raise ValueError(cursor)
    offset = int(raw[2:])
    if offset < 0:
        raise ValueError(cursor)
    return offset


class _ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        self.status = status
        self.message = message


def _int_param(params: dict, name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name, [None])[0]
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise _ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be between {lo} and {hi}")
    return value


def _make_handler(endpoints: dict[str, dict], token: str):
    class Handler(BaseHTTPRequestHandler):
        server_version = "datarail-sandbox/1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
            # The stdlib writes every request to stderr; keep it at DEBUG.
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: HTTPStatus, body: dict) -> None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            url = urlsplit(self.path)
            try:
                if url.path == "/health":
                    self._send(HTTPStatus.OK, {"status": "ok", "endpoints": sorted(endpoints)})
                    return
                if self.headers.get("Authorization", "") != f"Bearer {token}":
                    raise _ApiError(HTTPStatus.UNAUTHORIZED, "missing or invalid bearer token")
                spec = endpoints.get(url.path.rstrip("/") or "/")
                if spec is None:
                    raise _ApiError(HTTPStatus.NOT_FOUND, f"no endpoint {url.path}")
                self._send(HTTPStatus.OK, self._page(spec, parse_qs(url.query)))
            except _ApiError as exc:
                self._send(exc.status, {"error": exc.status.phrase, "message": exc.message})

        def _page(self, spec: dict, params: dict) -> dict:
            records = spec["records"]
            since = params.get("updated_since", [None])[0]
            if since:
                key = spec.get("updated_at_key")
                if not key:
                    raise _ApiError(HTTPStatus.BAD_REQUEST, "this endpoint has no update time")
                try:
                    floor = _parse_time(since)
                except ValueError:
                    raise _ApiError(HTTPStatus.BAD_REQUEST, "updated_since must be YYYY-MM-DD[ HH:MM:SS]") from None
                records = [r for r in records if r.get(key) and _parse_time(r[key]) >= floor]
            rkey = spec.get("records_key", "data")
            if spec["pagination"] == "cursor":
                limit = _int_param(params, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
                cursor = params.get("cursor", [None])[0]
                try:
                    offset = decode_cursor(cursor) if cursor else 0
                except ValueError:
                    raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid cursor") from None
                chunk = records[offset:offset + limit]
                nxt = offset + limit
                return {rkey: chunk, "next_cursor": encode_cursor(nxt) if nxt < len(records) else None}
            size = _int_param(params, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
            page = _int_param(params, "page", 1, 1, 10**9)
            total = len(records)
            return {rkey: records[(page - 1) * size:page * size], "page": page, "page_size": size,
                    "total": total, "total_pages": (total + size - 1) // size}

    return Handler


class SandboxApi:
    """The sandbox JSON API on a background thread; use as a context manager.

    ``port=0`` picks a free port; read it back from :attr:`port` / :attr:`base_url`.
    """

    def __init__(self, api_dir: str | Path, host: str = "127.0.0.1", port: int = 0, token: str | None = None):
        self.api_dir = Path(api_dir)
        self.host = host
        self.token = token or _demo_token()
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SandboxApi:
        """Load the API files and start serving (returns self)."""
        if self._server is not None:
            return self
        handler = _make_handler(load_endpoints(self.api_dir), self.token)
        self._server = ThreadingHTTPServer((self.host, self._requested_port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-api", daemon=True)
        self._thread.start()
        log.info("sandbox API serving %s at %s", self.api_dir, self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> SandboxApi:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def set_http_port(connections_file: str | Path, port: int, host: str = "127.0.0.1") -> dict:
    """Write the running server's host and port into every ``http`` connection of a
    sandbox ``connections.json`` (built with ``port: null``); returns the updated dict."""
    path = Path(connections_file)
    conns = json.loads(path.read_text(encoding="utf-8"))
    for conn in conns.values():
        if conn.get("conn_type") == "http":
            conn["host"], conn["port"] = host, port
    path.write_text(json.dumps(conns, ensure_ascii=False, indent=2), encoding="utf-8")
    return conns


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.api_server DIR [--host H] [--port N] [--token T] [--connections FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.api_server", description=__doc__.splitlines()[0])
    parser.add_argument("api_dir", type=Path, help="folder with the <unit>_<system>.json files (out_dir/api)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default=None, help="bearer token (default: the sandbox demo token)")
    parser.add_argument("--connections", type=Path, default=None,
                        help="connections.json whose http connections get this host and port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api = SandboxApi(args.api_dir, host=args.host, port=args.port, token=args.token).start()
    if args.connections:
        set_http_port(args.connections, api.port, args.host)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()


if __name__ == "__main__":
    main()
