-- Connected Vapi accounts, their encrypted API keys, sync runs and daily usage
-- (contract section 6).

-- The key lives in its own row so that disconnecting deletes it, not just flags it.
-- `sealed` is calltrail_common.crypto's versioned AES-256-GCM format, bound to org_id.
CREATE TABLE vapi_api_keys (
    org_id      uuid PRIMARY KEY REFERENCES vapi_accounts (org_id) ON DELETE CASCADE,
    sealed      bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE vapi_accounts
    -- Operators only (`calltrail vapi connect --api-base-url`): NULL means VAPI_API_BASE_URL.
    ADD COLUMN api_base_url         text,
    ADD COLUMN disconnected_reason  text,
    ADD COLUMN connected_at         timestamptz NOT NULL DEFAULT now(),
    -- Scheduling: due at next_sync_at; a replica holds the account while lease_until is
    -- in the future (a killed replica's lease runs out and another takes the account).
    ADD COLUMN next_sync_at         timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN lease_owner          text,
    ADD COLUMN lease_until          timestamptz,
    -- Rate limits and outages: no request before this, and how many rounds failed in a row.
    ADD COLUMN backoff_until        timestamptz,
    ADD COLUMN failures             integer NOT NULL DEFAULT 0,
    -- Calls updated up to this instant (Vapi's clock, minus an overlap) are known: later
    -- rounds ask only for calls updated since. NULL: the first sync backfills.
    ADD COLUMN calls_watermark      timestamptz,
    ADD COLUMN last_synced_at       timestamptz;
CREATE INDEX vapi_accounts_due ON vapi_accounts (next_sync_at) WHERE status = 'connected';

CREATE TABLE sync_runs (
    id              uuid PRIMARY KEY,
    org_id          uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    trigger         text NOT NULL,                 -- schedule | manual | connect
    status          text NOT NULL,                 -- queued | running | succeeded | failed
    requested_at    timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    worker          text,
    calls_seen      integer NOT NULL DEFAULT 0,
    calls_published integer NOT NULL DEFAULT 0,
    days_updated    integer NOT NULL DEFAULT 0,
    requests        integer NOT NULL DEFAULT 0,
    reason          text,
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed'))
);
CREATE INDEX sync_runs_org ON sync_runs (org_id, requested_at DESC);
CREATE INDEX sync_runs_open ON sync_runs (status) WHERE status IN ('queued', 'running');

-- What Vapi's call list says about each call's usage; the daily usage is an exact aggregate
-- over these rows, recomputed for every day a sync touched.
CREATE TABLE vapi_call_usage (
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    call_id     text NOT NULL,
    day         date NOT NULL,                     -- UTC day of createdAt
    seconds     numeric NOT NULL DEFAULT 0,        -- endedAt - startedAt, to the microsecond
    cost        numeric NOT NULL DEFAULT 0,
    cost_breakdown jsonb,                          -- Vapi's costBreakdown, where it gives one
    updated_at  timestamptz,                       -- Vapi's updatedAt
    PRIMARY KEY (org_id, call_id)
);
CREATE INDEX vapi_call_usage_day ON vapi_call_usage (org_id, day);

CREATE TABLE vapi_usage_daily (
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    day         date NOT NULL,
    calls       integer NOT NULL,
    minutes     numeric NOT NULL,                  -- round(sum(seconds) / 60, 6)
    cost        numeric NOT NULL,
    -- Sums of the numeric costBreakdown components (transport, stt, llm, tts, vapi, ...).
    cost_breakdown jsonb NOT NULL DEFAULT '{}',
    synced_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, day)
);
