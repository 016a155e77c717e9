-- 0001: the meta and quality areas of the spine. ods and share tables are created per
-- catalog resource by warehouse/tables.py (their columns come from the catalog).
-- Portable types only: the same file runs on SQLite and PostgreSQL.

-- One row per (resource, data interval): what the run extracted, loaded and quarantined.
CREATE TABLE meta.runs (
    resource          VARCHAR(64) NOT NULL,
    interval_key      VARCHAR(40) NOT NULL,
    unit              VARCHAR(64) NOT NULL,
    interval_start    TIMESTAMP NOT NULL,
    interval_end      TIMESTAMP NOT NULL,
    run_id            VARCHAR(250),
    status            VARCHAR(16) NOT NULL,
    extracted         BIGINT NOT NULL DEFAULT 0,
    loaded            BIGINT NOT NULL DEFAULT 0,
    quarantined       BIGINT NOT NULL DEFAULT 0,
    warned            BIGINT NOT NULL DEFAULT 0,
    staged_bytes      BIGINT NOT NULL DEFAULT 0,
    duration_s        DOUBLE PRECISION,
    watermark_before  VARCHAR(40),
    watermark_after   VARCHAR(40),
    latest_update     VARCHAR(40),
    error             TEXT,
    finished_at       TIMESTAMP,
    PRIMARY KEY (resource, interval_key)
);

-- Catalog snapshot, refreshed by every run, so metrics are plain SQL over the warehouse.
CREATE TABLE meta.catalog_units (
    code          VARCHAR(64) PRIMARY KEY,
    name_zh       VARCHAR(200) NOT NULL,
    name_en       VARCHAR(200) NOT NULL,
    contact_email VARCHAR(200) NOT NULL,
    region        VARCHAR(6) NOT NULL
);
CREATE TABLE meta.catalog_resources (
    code               VARCHAR(64) PRIMARY KEY,
    table_name         VARCHAR(64) NOT NULL,
    name_zh            VARCHAR(200) NOT NULL,
    name_en            VARCHAR(200) NOT NULL,
    unit               VARCHAR(64) NOT NULL,
    system_kind        VARCHAR(16) NOT NULL,
    sharing_type       VARCHAR(16) NOT NULL,
    sharing_condition  TEXT,
    base_library       VARCHAR(16) NOT NULL,
    update_cycle       VARCHAR(16) NOT NULL,
    cycle_days         INTEGER NOT NULL,
    status             VARCHAR(16) NOT NULL
);
CREATE TABLE meta.catalog_grants (
    resource  VARCHAR(64) NOT NULL,
    unit      VARCHAR(64) NOT NULL,
    PRIMARY KEY (resource, unit)
);
CREATE TABLE meta.catalog_responsibilities (
    unit      VARCHAR(64) NOT NULL,
    resource  VARCHAR(64) NOT NULL,
    cycle     VARCHAR(16) NOT NULL,
    PRIMARY KEY (unit, resource)
);
CREATE TABLE meta.catalog_items (
    code           VARCHAR(64) PRIMARY KEY,
    name_zh        VARCHAR(200) NOT NULL,
    name_en        VARCHAR(200) NOT NULL,
    handling_unit  VARCHAR(64) NOT NULL
);
CREATE TABLE meta.catalog_needs (
    item         VARCHAR(64) NOT NULL,
    need         VARCHAR(64) NOT NULL,
    material_zh  VARCHAR(200) NOT NULL,
    PRIMARY KEY (item, need)
);
CREATE TABLE meta.catalog_need_resources (
    item      VARCHAR(64) NOT NULL,
    need      VARCHAR(64) NOT NULL,
    resource  VARCHAR(64) NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (item, need, resource)
);

-- Per run date and resource: is it delivered, published, fresh, quality-passing?
CREATE TABLE meta.resource_status (
    run_date       VARCHAR(10) NOT NULL,
    resource       VARCHAR(64) NOT NULL,
    delivered      INTEGER NOT NULL,
    extracted      BIGINT NOT NULL,
    loaded         BIGINT NOT NULL,
    quarantined    BIGINT NOT NULL,
    pass_rate      DOUBLE PRECISION,
    quality_ok     INTEGER NOT NULL,
    latest_update  VARCHAR(40),
    age_days       INTEGER,
    fresh          INTEGER NOT NULL,
    published      INTEGER NOT NULL,
    structured     INTEGER NOT NULL,
    shared_rows    BIGINT NOT NULL,
    PRIMARY KEY (run_date, resource)
);

-- Per run date and sharing need: met or not, and why (no_resource, not_delivered,
-- not_shared, not_granted, stale, failing_quality); the resource that meets it or fails it.
CREATE TABLE meta.need_status (
    run_date       VARCHAR(10) NOT NULL,
    item           VARCHAR(64) NOT NULL,
    need           VARCHAR(64) NOT NULL,
    handling_unit  VARCHAR(64) NOT NULL,
    met            INTEGER NOT NULL,
    reason         VARCHAR(32),
    resource       VARCHAR(64),
    PRIMARY KEY (run_date, item, need)
);

-- The published sharing list (共享清单), one row per published resource, per run date.
CREATE TABLE share.sharing_list (
    run_date           VARCHAR(10) NOT NULL,
    resource           VARCHAR(64) NOT NULL,
    table_name         VARCHAR(64) NOT NULL,
    name_zh            VARCHAR(200) NOT NULL,
    name_en            VARCHAR(200) NOT NULL,
    provider_unit      VARCHAR(64) NOT NULL,
    sharing_type       VARCHAR(16) NOT NULL,
    sharing_condition  TEXT,
    granted_to         TEXT NOT NULL,
    update_cycle       VARCHAR(16) NOT NULL,
    base_library       VARCHAR(16) NOT NULL,
    fields             TEXT NOT NULL,
    shared_rows        BIGINT NOT NULL,
    latest_update      VARCHAR(40),
    pass_rate          DOUBLE PRECISION,
    quality_status     VARCHAR(32) NOT NULL,
    PRIMARY KEY (run_date, resource)
);

-- Which ods resources and runs fed each base and share table.
CREATE TABLE meta.lineage (
    target        VARCHAR(128) NOT NULL,
    resource      VARCHAR(64) NOT NULL,
    interval_key  VARCHAR(40) NOT NULL,
    built_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (target, resource)
);

-- Metric snapshots, keyed by run date: what leadership reads.
CREATE TABLE meta.metric_snapshots (
    run_date     VARCHAR(10) NOT NULL,
    metric       VARCHAR(64) NOT NULL,
    scope_type   VARCHAR(16) NOT NULL,
    scope        VARCHAR(64) NOT NULL,
    numerator    DOUBLE PRECISION,
    denominator  DOUBLE PRECISION,
    value        DOUBLE PRECISION,
    PRIMARY KEY (run_date, metric, scope_type, scope)
);

-- Rows that failed a blocking check, with their reasons; keyed by the data interval.
CREATE TABLE quality.quarantine (
    resource      VARCHAR(64) NOT NULL,
    interval_key  VARCHAR(40) NOT NULL,
    row_num       BIGINT NOT NULL,
    row_key       TEXT,
    reasons       TEXT NOT NULL,
    record        TEXT NOT NULL,
    PRIMARY KEY (resource, interval_key, row_num)
);

-- Per run and check: rows evaluated and failed (history of every check, passing too).
CREATE TABLE quality.check_results (
    resource      VARCHAR(64) NOT NULL,
    interval_key  VARCHAR(40) NOT NULL,
    check_id      VARCHAR(128) NOT NULL,
    field         VARCHAR(64),
    severity      VARCHAR(16) NOT NULL,
    rule          TEXT NOT NULL,
    evaluated     BIGINT NOT NULL,
    failed        BIGINT NOT NULL,
    failed_keys   TEXT NOT NULL,
    sample        TEXT NOT NULL,
    PRIMARY KEY (resource, interval_key, check_id)
);

-- Feedback tickets (数据质量问题反馈): one live ticket per (resource, check).
CREATE TABLE quality.tickets (
    ticket_id        VARCHAR(32) PRIMARY KEY,
    resource         VARCHAR(64) NOT NULL,
    unit             VARCHAR(64) NOT NULL,
    check_id         VARCHAR(128) NOT NULL,
    field            VARCHAR(64),
    severity         VARCHAR(16) NOT NULL,
    state            VARCHAR(16) NOT NULL,
    rule             TEXT NOT NULL,
    assignee         VARCHAR(200) NOT NULL,
    evaluated        BIGINT NOT NULL,
    failed           BIGINT NOT NULL,
    failed_keys      TEXT NOT NULL,
    sample           TEXT NOT NULL,
    opened_interval  VARCHAR(40) NOT NULL,
    last_interval    VARCHAR(40) NOT NULL,
    opened_at        TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    due_date         VARCHAR(10) NOT NULL,
    closed_at        TIMESTAMP,
    UNIQUE (resource, check_id)
);

CREATE TABLE quality.ticket_events (
    ticket_id     VARCHAR(32) NOT NULL,
    seq           INTEGER NOT NULL,
    at            TIMESTAMP NOT NULL,
    actor         VARCHAR(64) NOT NULL,
    from_state    VARCHAR(16),
    to_state      VARCHAR(16) NOT NULL,
    interval_key  VARCHAR(40),
    comment       TEXT,
    PRIMARY KEY (ticket_id, seq)
);
