-- 0003 (issue 4): load audit, base-library builds and their lineage, cross-source conflicts.
-- The per-resource history tables (ods.<table>_history) and the ods column _valid_from follow
-- the catalog, so warehouse/tables.py:ensure_ods creates / upgrades them (see warehouse/README.md).
-- Portable types only: the same file runs on SQLite and PostgreSQL (no CREATE INDEX: its
-- schema-qualified form differs between the two; these tables are small or keyed by their PK).

-- Every load attempt, append-only (audit): what the merge did to ods.<table>.
CREATE TABLE meta.loads (
    load_id       VARCHAR(32) PRIMARY KEY,
    resource      VARCHAR(64) NOT NULL,
    interval_key  VARCHAR(40) NOT NULL,
    run_id        VARCHAR(250),
    method        VARCHAR(16) NOT NULL,
    rows_in       BIGINT NOT NULL,
    inserted      BIGINT NOT NULL,
    updated       BIGINT NOT NULL,
    unchanged     BIGINT NOT NULL,
    deleted       BIGINT NOT NULL,
    late          BIGINT NOT NULL,
    quarantined   BIGINT NOT NULL,
    valid_from    TIMESTAMP NOT NULL,
    loaded_at     TIMESTAMP NOT NULL,
    duration_s    DOUBLE PRECISION
);

-- Every build of a base-library model (full or incremental), append-only.
CREATE TABLE meta.builds (
    build_id        VARCHAR(32) PRIMARY KEY,
    target          VARCHAR(128) NOT NULL,
    model           VARCHAR(200) NOT NULL,
    model_checksum  VARCHAR(64) NOT NULL,
    interval_key    VARCHAR(40) NOT NULL,
    mode            VARCHAR(16) NOT NULL,
    scope_keys      BIGINT,
    row_count       BIGINT NOT NULL,
    started_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP NOT NULL,
    duration_s      DOUBLE PRECISION NOT NULL
);

-- Which loads (meta.loads) a base table's current contents were built from: after a full
-- build every load of its sources so far, after an incremental one also the loads it consumed.
CREATE TABLE meta.lineage_loads (
    target   VARCHAR(128) NOT NULL,
    load_id  VARCHAR(32) NOT NULL,
    PRIMARY KEY (target, load_id)
);

-- Cross-source conflicts in the base libraries: two sources disagree on one attribute of the
-- same person or entity. Attributed to the resource the catalog declares authoritative for
-- the attribute (resource / unit), so the quality loop can route it to that unit as a ticket.
-- Values stay inside the warehouse (like quality.quarantine.record): mask them on the way out.
CREATE TABLE quality.conflicts (
    library          VARCHAR(32) NOT NULL,
    subject_id       VARCHAR(64) NOT NULL,
    attribute        VARCHAR(64) NOT NULL,
    other_resource   VARCHAR(64) NOT NULL,
    other_value      TEXT NOT NULL,
    resource         VARCHAR(64) NOT NULL,
    unit             VARCHAR(64) NOT NULL,
    authority_value  TEXT NOT NULL,
    first_interval   VARCHAR(40) NOT NULL,
    last_interval    VARCHAR(40) NOT NULL,
    PRIMARY KEY (library, subject_id, attribute, other_resource, other_value)
);
