-- Extraction state (issue 3): what the extractors need to resume, diff and never ingest a
-- file twice, and a summary of every extraction. Written by extractors/state.py; shown and
-- reset with `datarail state show|reset`. The committed watermark itself stays in meta.runs
-- (written in the same transaction as the load), so a failed load never moves it.

-- One row per resource: reset marker and the source schema last seen (drift detection).
CREATE TABLE meta.extract_state (
    resource         VARCHAR(64) PRIMARY KEY,
    reset_at         TIMESTAMP,
    reset_watermark  VARCHAR(40),
    source_schema    TEXT,
    updated_at       TIMESTAMP NOT NULL
);

-- One row per resource and data interval: the latest extraction attempt's summary.
CREATE TABLE meta.extract_runs (
    resource          VARCHAR(64) NOT NULL,
    interval_key      VARCHAR(40) NOT NULL,
    unit              VARCHAR(64) NOT NULL,
    status            VARCHAR(16) NOT NULL,
    engine            VARCHAR(16),
    rows_read         BIGINT NOT NULL DEFAULT 0,
    rows_staged       BIGINT NOT NULL DEFAULT 0,
    rows_discarded    BIGINT NOT NULL DEFAULT 0,
    chunks            INTEGER NOT NULL DEFAULT 0,
    staged_bytes      BIGINT NOT NULL DEFAULT 0,
    duration_s        DOUBLE PRECISION,
    rows_per_s        DOUBLE PRECISION,
    watermark_before  VARCHAR(40),
    watermark_after   VARCHAR(40),
    inserted          BIGINT,
    updated           BIGINT,
    deleted           BIGINT,
    unchanged         BIGINT,
    parts             INTEGER NOT NULL DEFAULT 1,
    drift             TEXT,
    source_files      TEXT,
    error             TEXT,
    started_at        TIMESTAMP,
    finished_at       TIMESTAMP NOT NULL,
    PRIMARY KEY (resource, interval_key)
);

-- Snapshot change tracking: the row hash of every key a snapshot delivery staged, per interval.
-- The next interval diffs against the latest LOADED earlier interval: inserts, updates, deletes.
CREATE TABLE meta.snapshot_hashes (
    resource      VARCHAR(64) NOT NULL,
    interval_key  VARCHAR(40) NOT NULL,
    row_key       VARCHAR(400) NOT NULL,
    row_hash      VARCHAR(32) NOT NULL,
    PRIMARY KEY (resource, interval_key, row_key)
);

-- File drops: every file seen, by content fingerprint (sha256), so none is ingested twice.
CREATE TABLE meta.file_ingests (
    resource      VARCHAR(64) NOT NULL,
    fingerprint   VARCHAR(64) NOT NULL,
    file_name     VARCHAR(400) NOT NULL,
    size_bytes    BIGINT NOT NULL,
    interval_key  VARCHAR(40) NOT NULL,
    status        VARCHAR(16) NOT NULL,
    reason        TEXT,
    archived_to   VARCHAR(1000),
    rows_staged   BIGINT,
    seen_at       TIMESTAMP NOT NULL,
    PRIMARY KEY (resource, fingerprint)
);
