-- The daily figures (daily_stats and the per-day breakdowns of 0008) kept in shards, so that
-- call-processor replicas never wait on each other: every batch of one busy organization
-- used to add to the same row of each table and hold it until commit, so a second replica
-- made the drain slower. Now a batch adds to its own shard's rows (the shard is the
-- partition it came from, which one replica at a time applies: call_processor/partitions.py),
-- and the tables under the old names are views that sum the shards. They are still equal,
-- at every commit, to the aggregate over calls and leads.
--
-- Stop the processors of the previous release before migrating: they write the old tables.

ALTER TABLE daily_stats RENAME TO daily_stats_shards;
ALTER TABLE daily_stats_shards ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE daily_stats_shards DROP CONSTRAINT daily_stats_pkey;
ALTER TABLE daily_stats_shards ADD CONSTRAINT daily_stats_shards_pkey
    PRIMARY KEY (org_id, day, shard);

ALTER TABLE daily_call_outcomes RENAME TO daily_call_outcome_shards;
ALTER TABLE daily_call_outcome_shards ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE daily_call_outcome_shards DROP CONSTRAINT daily_call_outcomes_pkey;
ALTER TABLE daily_call_outcome_shards ADD CONSTRAINT daily_call_outcome_shards_pkey
    PRIMARY KEY (org_id, day, outcome_key, shard);

ALTER TABLE daily_assistants RENAME TO daily_assistant_shards;
ALTER TABLE daily_assistant_shards ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE daily_assistant_shards DROP CONSTRAINT daily_assistants_pkey;
ALTER TABLE daily_assistant_shards ADD CONSTRAINT daily_assistant_shards_pkey
    PRIMARY KEY (org_id, day, assistant_key, shard);

-- A shard's row may hold a negative count (a call counted in one shard, moved to another
-- day by a later batch in another) or zero; only the sums mean anything.
CREATE VIEW daily_stats AS
SELECT org_id, day,
       sum(calls)::integer AS calls, sum(inbound)::integer AS inbound,
       sum(outbound)::integer AS outbound, sum(web)::integer AS web,
       sum(new_leads)::integer AS new_leads,
       sum(duration_seconds) AS duration_seconds, sum(cost) AS cost
FROM daily_stats_shards
GROUP BY org_id, day;

-- A breakdown row exists while calls have it (0008 deleted a row that reached zero).
CREATE VIEW daily_call_outcomes AS
SELECT org_id, day, outcome_key, ended_reason, success_evaluation,
       sum(calls)::integer AS calls
FROM daily_call_outcome_shards
GROUP BY org_id, day, outcome_key, ended_reason, success_evaluation
HAVING sum(calls) <> 0;

CREATE VIEW daily_assistants AS
SELECT org_id, day, assistant_key, assistant_id,
       sum(calls)::integer AS calls, sum(duration_seconds) AS duration_seconds,
       sum(cost) AS cost
FROM daily_assistant_shards
GROUP BY org_id, day, assistant_key, assistant_id
HAVING sum(calls) <> 0;
