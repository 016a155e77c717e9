"""Extract a catalog resource from a paginated JSON API.

The connection (``conn_type`` ``http``) gives the base URL ``{schema or 'http'}://host[:port]``
and the credentials (``extra['token']`` -> ``Authorization: Bearer``, else login/password ->
basic auth). The resource's ``location`` gives the endpoint, the pagination style and the key
the records sit under (``records_key``, default ``data``).

Pagination styles (``location.pagination``):

- ``page``: ``?page=N&page_size=S`` from page 1; stops after ``total_pages`` or at an empty page.
- ``offset``: ``?offset=O&limit=S``; stops at a page shorter than ``limit``.
- ``cursor``: ``?limit=S[&cursor=C]``; follows ``next_cursor`` until it is null.
- none: one request.

Requests go through one ``requests.Session``, at most ``extra['rate_limit_per_s']`` per second.
Connection errors, timeouts and 5xx answers are retried with exponential backoff; 429 waits
for ``Retry-After``; any other 4xx is an :class:`ExtractError` naming the URL and status.

Connection extras (all optional): ``token``, ``rate_limit_per_s``, ``page_size``,
``timeout_s`` (30), ``max_attempts`` (5), ``backoff_base_s`` (0.5), ``backoff_max_s`` (30),
``retry_after_max_s`` (120), ``max_pages`` (100000), ``source_tz``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from catalog.models import Resource
from datarail.errors import ExtractError
from datarail.interval import Interval
from datarail.privacy import scrub_text
from extractors.base import ConnInfo, ExtractResult
from extractors.drift import (
    Drift,
    Rejects,
    RetypeWatch,
    drift_error,
    log_drift,
    new_column_name,
    policy_of,
    settle_retyped,
)
from extractors.staging import StagingWriter, WatermarkWindow, resolve_columns, source_timezone, to_text

log = logging.getLogger(__name__)

USER_AGENT = "datarail-extractor/0.1"


def base_url(conn: ConnInfo) -> str:
    """``{schema or 'http'}://host[:port]``, with any user:password@ in ``host`` removed."""
    if not conn.host:
        raise ExtractError("http connection needs a host")
    host = conn.host.rsplit("@", 1)[-1].rstrip("/")
    if "://" in host:  # a host given as a full URL: keep only its network location
        host = urlsplit(host).netloc.rsplit("@", 1)[-1]
    port = f":{conn.port}" if conn.port else ""
    return f"{conn.schema or 'http'}://{host}{port}"


class RateLimiter:
    """At most ``per_s`` calls per second: each call waits until ``1/per_s`` after the previous."""

    def __init__(self, per_s: float | None, *, clock=time.monotonic, sleep=time.sleep):
        self.interval = 1.0 / float(per_s) if per_s else 0.0
        self._next = 0.0
        self._clock, self._sleep = clock, sleep

    def wait(self) -> None:
        """Block until the next call is allowed."""
        if not self.interval:
            return
        now = self._clock()
        if now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


class ApiClient:
    """GET JSON from one API with retries, backoff and a rate limit; never logs credentials."""

    def __init__(self, conn: ConnInfo, *, unit: str | None = None, resource: str | None = None):
        extra = conn.extra or {}
        self.base = base_url(conn)
        self.unit, self.resource = unit, resource
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
        if extra.get("token"):
            self.session.headers["Authorization"] = f"Bearer {extra['token']}"
        elif conn.login:
            self.session.auth = (conn.login, conn.password or "")
        self.timeout = float(extra.get("timeout_s", 30))
        self.max_attempts = max(int(extra.get("max_attempts", 5)), 1)
        self.backoff_base = float(extra.get("backoff_base_s", 0.5))
        self.backoff_max = float(extra.get("backoff_max_s", 30))
        self.retry_after_max = float(extra.get("retry_after_max_s", 120))
        self.limiter = RateLimiter(extra.get("rate_limit_per_s"))
        self.requests = 0

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        """The full URL of ``path`` (credentials are never part of it; credentials go in headers)."""
        url = f"{self.base}/{path.lstrip('/')}"
        return f"{url}?{urlencode(params)}" if params else url

    def _shown(self, url: str) -> str:
        # URLs go into logs and errors: mask any ID or phone number a parameter might carry.
        return scrub_text(url) or url

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_base * 2 ** (attempt - 1), self.backoff_max)

    def _retry_after(self, resp: requests.Response, attempt: int) -> float:
        value = resp.headers.get("Retry-After", "")
        try:
            return min(max(float(value), 0.0), self.retry_after_max)
        except ValueError:  # absent or an HTTP date: fall back to our own backoff
            return self._backoff(attempt)

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``path`` and return the decoded JSON body, retrying transient failures."""
        url = self.url(path, params)
        shown = self._shown(url)
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            self.limiter.wait()
            self.requests += 1
            try:
                resp = self.session.get(url, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                last, wait = type(exc).__name__, self._backoff(attempt)
            else:
                status = resp.status_code
                if status == 429:
                    last, wait = "HTTP 429 Too Many Requests", self._retry_after(resp, attempt)
                elif status >= 500:
                    last, wait = f"HTTP {status}", self._backoff(attempt)
                elif status >= 400:
                    hint = ("Check the credentials of the connection" if status in (401, 403)
                            else "Check location.endpoint in the catalog and the API's documentation")
                    raise ExtractError(f"GET {shown} answered HTTP {status} {resp.reason or ''}".rstrip(),
                                       unit=self.unit, resource=self.resource, hint=hint)
                else:
                    try:
                        return resp.json()
                    except ValueError as exc:
                        raise ExtractError(f"GET {shown} answered HTTP {status} but the body is not JSON",
                                           unit=self.unit, resource=self.resource) from exc
            if attempt < self.max_attempts:
                log.warning("GET %s: %s, retrying in %.2f s (attempt %d of %d)",
                            shown, last, wait, attempt, self.max_attempts)
                time.sleep(wait)
        raise ExtractError(f"GET {shown} failed after {self.max_attempts} attempts: {last}",
                           unit=self.unit, resource=self.resource,
                           hint="The API is down or overloaded; retry the run later")

    def close(self) -> None:
        """Close the session's connections."""
        self.session.close()


def _records(body: Any, key: str, url: str, resource: Resource) -> list[dict[str, Any]]:
    records = body.get(key) if isinstance(body, dict) else None
    if records is None and isinstance(body, dict) and key not in body:
        raise ExtractError(f"{scrub_text(url)}: the answer has no {key!r} key (keys: {sorted(body)[:20]})",
                           unit=resource.unit, resource=resource.code,
                           hint="Fix location.records_key in the catalog")
    records = records or []
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ExtractError(f"{scrub_text(url)}: {key!r} is not a list of JSON objects", unit=resource.unit,
                           resource=resource.code)
    return records


def pages(client: ApiClient, resource: Resource, *, page_size: int, params: dict[str, Any],
          max_pages: int = 100_000) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """Yield (records, ``_source`` label) page by page, following the resource's pagination."""
    loc = resource.location
    endpoint, key = loc.endpoint or "", loc.records_key
    mode = loc.pagination
    n = 0
    if mode is None:
        body = client.get_json(endpoint, params)
        yield _records(body, key, client.url(endpoint, params), resource), "page 1"
        return
    offset, cursor, seen = 0, None, set()
    while True:
        n += 1
        if n > max_pages:
            raise ExtractError(f"{client.url(endpoint)}: more than {max_pages} pages", unit=resource.unit,
                               resource=resource.code, hint="Raise extra.max_pages or check the API's paging")
        if mode == "page":
            q = {**params, "page": n, "page_size": page_size}
        elif mode == "offset":
            q = {**params, "offset": offset, "limit": page_size}
        else:
            q = {**params, "limit": page_size, **({"cursor": cursor} if cursor is not None else {})}
        body = client.get_json(endpoint, q)
        records = _records(body, key, client.url(endpoint, q), resource)
        if mode == "page":
            if not records:
                return
            yield records, f"page {n}"
            total = body.get("total_pages") if isinstance(body, dict) else None
            if total is not None and n >= int(total):
                return
        elif mode == "offset":
            if records:
                yield records, f"page {n}"
            if len(records) < page_size:
                return
            offset += len(records)
        else:
            if records:
                yield records, f"cursor page {n}"
            cursor = body.get("next_cursor") if isinstance(body, dict) else None
            if cursor in (None, ""):
                return
            if cursor in seen:
                raise ExtractError(f"{client.url(endpoint)}: next_cursor repeats an earlier cursor",
                                   unit=resource.unit, resource=resource.code)
            seen.add(cursor)


def extract_http(resource: Resource, conn: ConnInfo, interval: Interval, out_dir: Path, *,
                 since: str | None, chunk_rows: int) -> ExtractResult:
    """Stage ``resource`` from its JSON API under ``out_dir``, in page order.

    Watermark resources send ``updated_since=<since - lookback_days>`` (ISO) and keep only
    records whose watermark is before ``interval.end`` (so a rerun of the interval stages the
    same rows even when the API has newer records by then).
    """
    started = time.monotonic()
    extra = conn.extra or {}
    tz = source_timezone(conn)
    window = WatermarkWindow.for_resource(resource, interval, since, tz)
    params: dict[str, Any] = {}
    if window is not None and window.lower is not None:
        params["updated_since"] = window.lower.isoformat(timespec="seconds")
    page_size = int(extra.get("page_size") or min(chunk_rows, 1000))
    wm_index = [f.name for f in resource.fields].index(window.field) if window else None
    client = ApiClient(conn, unit=resource.unit, resource=resource.code)
    keys: list[str] | None = None
    known: set[str] = set()
    new_keys: list[str] = []
    first_at: dict[str, str] = {}
    staged_new: dict[str, list[str]] = {}  # evolve: staged column -> the new keys it holds
    skipped = 0
    where = f"endpoint {resource.location.endpoint}"
    drift = Drift(policy=policy_of(resource))
    evolve = drift.policy == "evolve"
    rejects = Rejects(out_dir) if drift.policy == "discard_row" else None
    watch = RetypeWatch(resource, out_dir, json_kinds=True)
    try:
        with StagingWriter(out_dir, resource, chunk_rows=chunk_rows, tz=tz, started=started,
                           watch=watch) as writer:
            for records, label in pages(client, resource, page_size=page_size, params=params,
                                        max_pages=int(extra.get("max_pages", 100_000))):
                if not records:
                    continue
                # Records omit keys for nulls in some APIs: judge the layout on a whole page.
                seen = list(dict.fromkeys(k for r in records for k in r))
                if keys is None:
                    mapping = resolve_columns(resource, seen, where=where)
                    keys = [seen[i] if i is not None else None for i in mapping]
                    known = set(filter(None, keys))
                    drift.missing = [f.name for f, k in zip(resource.fields, keys, strict=True) if k is None]
                    if drift.policy == "freeze" and drift.missing:
                        col = drift.missing[0]
                        raise drift_error(resource, resource.field(col).source_name, f"is missing from {where}",
                                          f"{label}, record 1", field=col)
                late = [k for k in seen if k not in known and str(k).strip()]
                if late:  # a key no field maps to (on this page or, for sparse keys, a later one)
                    for k in late:
                        first_at[k] = next(f"{label}, record {i}" for i, r in enumerate(records, start=1) if k in r)
                    new_keys += late
                    known.update(late)
                    drift.new = list(new_keys)
                    if evolve:
                        for k in late:  # " remark" and "remark" share one staged column
                            staged_new.setdefault(new_column_name(k), []).append(k)
                        writer.add_extra_columns(list(staged_new))
                for i, rec in enumerate(records, start=1):
                    values = [rec.get(k) if k is not None else None for k in keys]
                    if window is not None:
                        if not window.admits(values[wm_index]):
                            skipped += 1
                            continue
                        window.observe(values[wm_index])
                    extras = {k: rec[k] for k in new_keys if to_text(rec.get(k)) is not None}
                    if extras:
                        if drift.policy == "freeze":
                            raise drift_error(resource, next(iter(extras)), f"is delivered by {where} but not "
                                              "in the catalog", f"{label}, record {i}")
                        if rejects is not None:
                            drift.discarded_rows += 1
                            rejects.add(label, "value in new key(s) " + ", ".join(extras), rec)
                            continue
                        if drift.policy == "discard_value":
                            drift.discarded_values += len(extras)
                    if staged_new:
                        values += [next((rec[k] for k in ks if rec.get(k) is not None), None)
                                   for ks in staged_new.values()]
                    writer.append(values, label, where=(label, i))
            if drift.policy == "freeze" and new_keys:
                raise drift_error(resource, new_keys[0], f"is delivered by {where} but not in the catalog",
                                  f"{first_at[new_keys[0]]} (the first to carry the key; none has a value in it)")
        staged = settle_retyped(resource, drift, watch, writer, rejects, where)
    except BaseException:
        if rejects is not None:
            rejects.abort()
        raise
    finally:
        client.close()
    log.info("resource %s: %d request(s) to %s", resource.code, client.requests, client.base)
    log_drift(resource, drift, where)
    if skipped:
        log.info("resource %s: %d record(s) at or after the interval end or before the window skipped",
                 resource.code, skipped)
    res = (writer.result() if window is None
           else writer.result(watermark_before=since, watermark_after=window.after))
    res.rows, res.bytes = staged, writer.bytes
    res.engine = "http"
    res.drift = drift.to_dict()
    res.rows_read = res.rows + drift.discarded_rows
    res.rejects_file = rejects.close() if rejects else None
    return res


__all__ = ["ApiClient", "RateLimiter", "base_url", "extract_http", "pages"]
