-- Vapi's structured outputs and scorecards (decision 41). Vapi extracts them after the call,
-- so they often arrive on the call later than its end-of-call-report, through a snapshot.

-- As Vapi sends them: objects keyed by structured-output id ({name, result}) and by
-- scorecard id ({name, score, scoreNormalized, metricPoints}). The lead's name and email
-- the outputs carry (calltrail_common.structured_outputs.contact) are kept beside them, so
-- the leads' refresh reads two columns instead of the rule.
ALTER TABLE calls
    ADD COLUMN structured_outputs  jsonb,
    ADD COLUMN scorecards          jsonb,
    ADD COLUMN output_name         text,
    ADD COLUMN output_email        text;

-- What each call says about success, per source, per UTC day: one row per boolean output
-- (value 1 or 0) and per scorecard (its normalized score) of the calls of that day, with
-- the call's analysis.successEvaluation beside it, so the overview can count, exactly,
-- the calls that have an organization's chosen source and fall back to successEvaluation
-- for the others. Maintained by the call processor by exact deltas, in shards, like
-- daily_call_outcome_shards (migrations 0008 and 0009); keyed by the md5 of the values.
CREATE TABLE daily_success_signal_shards (
    org_id              uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    day                 date NOT NULL,
    shard               smallint NOT NULL DEFAULT 0,
    -- md5(ROW(kind, source_id, value, success_evaluation)::text)
    signal_key          uuid NOT NULL,
    kind                text NOT NULL,          -- 'output' or 'scorecard'
    source_id           text NOT NULL,          -- the structured output's or scorecard's id
    value               numeric NOT NULL,
    success_evaluation  text,
    calls               integer NOT NULL,
    PRIMARY KEY (org_id, day, signal_key, shard)
);

-- The overview reads one source's rows over a range (api.repository.SUCCESS_SIGNALS).
CREATE INDEX daily_success_signals_by_source
    ON daily_success_signal_shards (org_id, kind, source_id, day);

CREATE VIEW daily_success_signals AS
SELECT org_id, day, signal_key, kind, source_id, value, success_evaluation,
       sum(calls)::integer AS calls
FROM daily_success_signal_shards
GROUP BY org_id, day, signal_key, kind, source_id, value, success_evaluation
HAVING sum(calls) <> 0;

-- Which source counts as success for an organization (none: analysis.successEvaluation).
-- A scorecard counts as success at or above its pass mark (its normalized score, 0-100).
-- Owned by calltrail_common.success_measures; set from the dashboard, the API and the CLI.
CREATE TABLE success_measures (
    org_id      uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('output', 'scorecard')),
    source_id   text NOT NULL CHECK (length(source_id) BETWEEN 1 AND 255),
    pass_mark   numeric CHECK (pass_mark BETWEEN 0 AND 100),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'scorecard') = (pass_mark IS NOT NULL))
);
