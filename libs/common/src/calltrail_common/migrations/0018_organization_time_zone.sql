-- Each organization's own day (decision 45). `time_zone` is the IANA zone it chose (set in
-- Settings, the API and the CLI; validated against the tzdata package). `figures_time_zone`
-- is the zone the daily figures are keyed by now: the call processor keys a batch's deltas
-- by it, read under a key-share lock on the organization's row; the rebuild
-- (call_processor.rebuild) takes the row FOR UPDATE, re-keys the figures from the calls and
-- leads, and sets it to `time_zone`, all in one transaction. The two differ while the
-- figures are being rebuilt.
ALTER TABLE organizations
    ADD COLUMN time_zone          text NOT NULL DEFAULT 'UTC',
    ADD COLUMN figures_time_zone  text NOT NULL DEFAULT 'UTC';

-- Usage per day (metrics-sync, decision 13) counts the organization's days too, by
-- `usage_time_zone`, which metrics-sync re-keys the same way (metrics_sync.repository);
-- each call's usage keeps its createdAt for that.
ALTER TABLE organizations
    ADD COLUMN usage_time_zone    text NOT NULL DEFAULT 'UTC';
ALTER TABLE vapi_call_usage
    ADD COLUMN created_at  timestamptz;  -- NULL for usage synced before: it keeps its UTC day
CREATE INDEX organizations_usage_rebuild ON organizations (id)
    WHERE time_zone <> usage_time_zone;

-- The rebuild finds the organizations whose figures wait for it.
CREATE INDEX organizations_figures_rebuild ON organizations (id)
    WHERE time_zone <> figures_time_zone;

-- The daily figures' comments said "UTC day": it is the organization's day now.
COMMENT ON COLUMN calls.stats_day IS
    'the UTC day of the moment the call counts on; the figures use the organization''s day';
