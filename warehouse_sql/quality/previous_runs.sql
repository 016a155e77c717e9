-- The loaded runs of one resource for intervals that ended by the start of this one, newest
-- first: the volume check's baseline and the newest change earlier runs saw (freshness of an
-- empty incremental delivery). A rerun of an interval never sees itself.
-- Params: resource, start, runs.
SELECT interval_key, extracted, latest_update
FROM meta.runs
WHERE resource = :resource
  AND status = 'loaded'
  AND interval_end <= :start
ORDER BY interval_end DESC
LIMIT :runs;
