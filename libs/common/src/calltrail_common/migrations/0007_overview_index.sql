-- The overview's figures over calls (how calls ended, per assistant) read every call of the
-- range: for 100,000 calls that was a sequential scan of the whole table, twice per request
-- (65 ms each, bench.api). An index on (org_id, stats_day) finds the range's calls, and
-- carries the fixed-size columns it sums. Not the text columns (ended_reason,
-- success_evaluation, assistant_id): they come from Vapi unbounded, and an index row over
-- 2,704 bytes fails the whole insert ("index row size exceeds btree maximum"), which would
-- stop the processor on a call with a long ended reason (the edge-value test found it).
CREATE INDEX calls_org_stats_day ON calls (org_id, stats_day)
    INCLUDE (duration_seconds, cost);
