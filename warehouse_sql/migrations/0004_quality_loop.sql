-- 0004 (issue 5): the quality loop. Evidence of every failing row, per-check run details with
-- the query that reproduces the failures, accepted disputes (waivers), the ticket workflow
-- (disputes, escalation), the supervision list (挂牌督办) and the notification log.
-- Portable types only: the same file runs on SQLite and PostgreSQL (no CREATE INDEX, whose
-- schema-qualified form differs between the two: these tables are read by their primary key).

-- Every failing row of every check, uncapped: the raw primary key stays inside the warehouse
-- (reports mask it). row_num is the delivery's _row for delivery checks, the ordinal of the
-- failing row for warehouse (cross-resource) checks.
CREATE TABLE quality.check_failures (
    resource      VARCHAR(64) NOT NULL,
    interval_key  VARCHAR(40) NOT NULL,
    check_id      VARCHAR(128) NOT NULL,
    row_num       BIGINT NOT NULL,
    row_key       TEXT NOT NULL,
    PRIMARY KEY (resource, interval_key, check_id, row_num)
);

-- Per run and check, beside quality.check_results: how the check ran (scope, GX expectation),
-- rows waived by accepted disputes, the observed value of delivery-level checks, and the SQL
-- that reproduces the failing rows from the warehouse.
CREATE TABLE quality.check_runs (
    resource       VARCHAR(64) NOT NULL,
    interval_key   VARCHAR(40) NOT NULL,
    check_id       VARCHAR(128) NOT NULL,
    kind           VARCHAR(32) NOT NULL,
    scope          VARCHAR(16) NOT NULL,
    expectation    VARCHAR(128),
    waived         BIGINT NOT NULL DEFAULT 0,
    observed       TEXT,
    reproduce_sql  TEXT NOT NULL,
    recorded_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (resource, interval_key, check_id)
);

-- Keys the data centre accepted as false positives for one check (an accepted dispute):
-- validation no longer fails them for that check.
CREATE TABLE quality.waivers (
    resource     VARCHAR(64) NOT NULL,
    check_id     VARCHAR(128) NOT NULL,
    row_key      VARCHAR(512) NOT NULL,
    ticket_id    VARCHAR(32) NOT NULL,
    reason_code  VARCHAR(32) NOT NULL,
    accepted_by  VARCHAR(200) NOT NULL,
    accepted_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (resource, check_id, row_key)
);

-- The supervision list (挂牌督办): tickets listed when overdue, delisted (销号) when resolved.
CREATE TABLE quality.supervision (
    ticket_id     VARCHAR(32) PRIMARY KEY,
    unit          VARCHAR(64) NOT NULL,
    resource      VARCHAR(64) NOT NULL,
    check_id      VARCHAR(128) NOT NULL,
    severity      VARCHAR(16) NOT NULL,
    due_date      VARCHAR(10) NOT NULL,
    listed_on     VARCHAR(10) NOT NULL,
    delisted_on   VARCHAR(10)
);

-- Digests sent to source units: one row per unit, run date and channel (email, webhook).
-- fingerprint is the unit's ticket state at sending time: a unit gets a digest only when it
-- changed since its last one.
CREATE TABLE quality.notifications (
    unit          VARCHAR(64) NOT NULL,
    run_date      VARCHAR(10) NOT NULL,
    channel       VARCHAR(16) NOT NULL,
    fingerprint   VARCHAR(64) NOT NULL,
    state         TEXT NOT NULL,
    status        VARCHAR(16) NOT NULL,
    recipient     VARCHAR(200),
    detail        TEXT,
    sent_at       TIMESTAMP NOT NULL,
    PRIMARY KEY (unit, run_date, channel)
);

-- The ticket workflow: disputes (reason code, comment, the data centre's decision) and
-- escalation onto the supervision list.
ALTER TABLE quality.tickets ADD COLUMN dispute_reason VARCHAR(32);
ALTER TABLE quality.tickets ADD COLUMN dispute_comment TEXT;
ALTER TABLE quality.tickets ADD COLUMN dispute_status VARCHAR(16);
ALTER TABLE quality.tickets ADD COLUMN escalated_on VARCHAR(10);
-- What happened in each event (opened, updated, acknowledged, disputed, escalated, ...).
ALTER TABLE quality.ticket_events ADD COLUMN action VARCHAR(32);
