-- The overview's breakdowns per UTC day (how calls ended, per assistant), maintained by the
-- call processor by exact deltas in the batch's transaction, like daily_stats: equal at
-- every commit to the aggregate over calls, so the api reads a few rows per day instead of
-- every call of the range (bench.api: 64 ms each over 100,000 calls).
--
-- The raw values are kept, not the api's buckets: the bucketing (api.outcomes) may change
-- without a migration. They come from Vapi unbounded (8 KB in the edge-value tests), and a
-- btree row over 2,704 bytes fails the insert, so a row is keyed by the md5 of its values
-- (as the record's text, which tells NULL from '') and the values are plain columns.
-- A row whose count reaches zero is deleted.
CREATE TABLE daily_call_outcomes (
    org_id              uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    day                 date NOT NULL,
    outcome_key         uuid NOT NULL,  -- md5(ROW(ended_reason, success_evaluation)::text)
    ended_reason        text,
    success_evaluation  text,
    calls               integer NOT NULL,
    PRIMARY KEY (org_id, day, outcome_key)
);

CREATE TABLE daily_assistants (
    org_id            uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    day               date NOT NULL,
    assistant_key     uuid NOT NULL,    -- md5(ROW(assistant_id)::text)
    assistant_id      text,
    calls             integer NOT NULL,
    duration_seconds  numeric NOT NULL,
    cost              numeric NOT NULL,
    PRIMARY KEY (org_id, day, assistant_key)
);

-- No processor may write calls while the backfill reads them (stop the old processors
-- before migrating: they do not maintain these tables).
LOCK TABLE calls IN SHARE MODE;

INSERT INTO daily_call_outcomes (org_id, day, outcome_key, ended_reason, success_evaluation,
                                 calls)
SELECT org_id, stats_day, md5(ROW(ended_reason, success_evaluation)::text)::uuid,
       ended_reason, success_evaluation, count(*)
FROM calls WHERE stats_day IS NOT NULL
GROUP BY org_id, stats_day, ended_reason, success_evaluation;

INSERT INTO daily_assistants (org_id, day, assistant_key, assistant_id, calls,
                              duration_seconds, cost)
SELECT org_id, stats_day, md5(ROW(assistant_id)::text)::uuid, assistant_id, count(*),
       coalesce(sum(duration_seconds), 0), coalesce(sum(cost), 0)
FROM calls WHERE stats_day IS NOT NULL
GROUP BY org_id, stats_day, assistant_id;
