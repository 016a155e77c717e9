-- meta.schema_migrations: which numbered migrations of warehouse_sql/migrations/ are applied.
-- Run before every migrate; safe to rerun.
CREATE TABLE IF NOT EXISTS meta.schema_migrations (
    version     VARCHAR(16) PRIMARY KEY,
    name        VARCHAR(200) NOT NULL,
    checksum    VARCHAR(64) NOT NULL,
    applied_at  TIMESTAMP NOT NULL
);
