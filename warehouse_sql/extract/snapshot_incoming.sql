-- Snapshot change tracking (extractors/state.py): the row hashes of the delivery being
-- diffed, streamed in by row group (PostgreSQL: COPY), in staged order (seq). A temporary
-- table: private to the connection, gone with it; emptied first in case it is reused.
CREATE TEMPORARY TABLE IF NOT EXISTS snapshot_incoming (
    seq       BIGINT NOT NULL,
    row_key   VARCHAR(400) NOT NULL,
    row_hash  VARCHAR(32) NOT NULL
);
DELETE FROM snapshot_incoming;
