-- Signed outbound webhooks (decision 40). The processor records what happened (an
-- outbound event and one delivery per endpoint that wants it) in the transaction that
-- changed the call or lead: the outbox. The dispatcher publishes unqueued deliveries to
-- RabbitMQ, sends them, and writes each attempt's outcome back here (the delivery log).
-- Table names say "outbound" apart from webhook_endpoints, which are Vapi's inbound ones.

CREATE TABLE outbound_endpoints (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id           uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    url              text NOT NULL,
    description      text NOT NULL DEFAULT '',
    event_types      text[] NOT NULL,
    -- "whsec_" + base64 of random bytes (Standard Webhooks). Kept as issued, like the
    -- inbound secrets (decision 27): signing needs it.
    secret           text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       uuid REFERENCES users (id) ON DELETE SET NULL,
    -- The dispatcher's view of the receiver: the first failure since the last success, and
    -- when it disabled the endpoint for failing too long ('failing'), or a person did
    -- ('by_user'). A disabled endpoint gets no new deliveries.
    failing_since    timestamptz,
    last_success_at  timestamptz,
    disabled_at      timestamptz,
    disabled_reason  text CHECK (disabled_reason IN ('failing', 'by_user')),
    CHECK ((disabled_at IS NULL) = (disabled_reason IS NULL)),
    CHECK (cardinality(event_types) > 0 AND event_types <@ ARRAY[
        'call.ended', 'call.updated', 'lead.created', 'lead.updated', 'usage.day_closed'])
);
CREATE INDEX outbound_endpoints_by_org ON outbound_endpoints (org_id);

-- What happened, once: the body's "data" as it was when it happened. The id is the
-- webhook-id a receiver deduplicates by, the same for every attempt and endpoint.
CREATE TABLE outbound_events (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    type         text NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    data         jsonb NOT NULL
);
CREATE INDEX outbound_events_by_org ON outbound_events (org_id, occurred_at);

-- One event to one endpoint. state: 'pending' (to send, or between retries), 'succeeded'
-- (a 2xx), 'dead' (retries exhausted, in the dead-letter queue), 'skipped' (its endpoint
-- was disabled before it was sent). "Send again" makes it pending and unqueued.
CREATE TABLE outbound_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint_id      uuid NOT NULL REFERENCES outbound_endpoints (id) ON DELETE CASCADE,
    event_id         uuid NOT NULL REFERENCES outbound_events (id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'succeeded', 'dead', 'skipped')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    queued_at        timestamptz,  -- NULL: the dispatcher has not published it yet
    attempts         integer NOT NULL DEFAULT 0,
    last_attempt_at  timestamptz,
    last_status      integer,      -- the last attempt's HTTP status; NULL: no answer
    last_error       text,         -- 'timeout', 'connection refused', ...: never a body
    last_latency_ms  integer,
    delivered_at     timestamptz,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX outbound_deliveries_unqueued ON outbound_deliveries (created_at)
    WHERE queued_at IS NULL;
CREATE INDEX outbound_deliveries_log ON outbound_deliveries (endpoint_id, created_at DESC);
CREATE INDEX outbound_deliveries_by_event ON outbound_deliveries (event_id);
