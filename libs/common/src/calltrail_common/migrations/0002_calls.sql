-- Phone numbers, Vapi accounts (for organization resolution), calls, leads, daily
-- statistics, the raw event archive and unassigned events (contract section 5).

-- A number (and a Vapi phone number id) belongs to at most one organization.
CREATE TABLE phone_numbers (
    id                    uuid PRIMARY KEY,
    org_id                uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    number                text UNIQUE,            -- E.164; absent for some SIP numbers
    vapi_phone_number_id  text UNIQUE,
    created_at            timestamptz NOT NULL DEFAULT now(),
    CHECK (number IS NOT NULL OR vapi_phone_number_id IS NOT NULL)
);
CREATE INDEX phone_numbers_org_id ON phone_numbers (org_id);

-- The Vapi account an organization connected (the key columns come with metrics-sync).
CREATE TABLE vapi_accounts (
    org_id       uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    vapi_org_id  text UNIQUE,
    status       text NOT NULL DEFAULT 'connected',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE leads (
    id                uuid PRIMARY KEY,
    org_id            uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    phone_number      text NOT NULL,              -- E.164
    name              text,
    email             text,
    first_call_at     timestamptz,
    last_call_at      timestamptz,
    call_count        integer NOT NULL DEFAULT 0,
    -- When its first inbound call was made: the day it counts as a new lead.
    first_inbound_at  timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, phone_number)
);

-- A call is keyed by its Vapi id; the id belongs to one organization for good.
CREATE TABLE calls (
    id                    text PRIMARY KEY,
    org_id                uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    direction             text,                   -- Vapi call type, kept as text
    status                text,
    ended_reason          text,
    created_at            timestamptz,            -- Vapi's createdAt
    started_at            timestamptz,
    ended_at              timestamptz,
    duration_seconds      numeric,                -- ended_at - started_at
    cost                  numeric,                -- USD, exact: sums must not depend on order
    cost_breakdown        jsonb,
    costs                 jsonb,
    customer_number       text,                   -- E.164 when it is a phone number
    customer_name         text,
    customer_email        text,
    phone_number_id       text,
    assistant_id          text,
    transcript            text,
    summary               text,
    structured_data       jsonb,
    success_evaluation    text,
    recording_url         text,
    stereo_recording_url  text,
    metadata              jsonb,
    lead_id               uuid REFERENCES leads (id) ON DELETE SET NULL,
    report_received       boolean NOT NULL DEFAULT false,
    last_event_at         timestamptz,
    stats_day             date,                   -- the UTC day the call counts on
    -- Version of each field's value, {field: [authority, event ms]}: see call_processor.calls.
    field_versions        jsonb NOT NULL DEFAULT '{}',
    inserted_at           timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX calls_org_created ON calls (org_id, created_at DESC, id DESC);
CREATE INDEX calls_org_customer ON calls (org_id, customer_number);
CREATE INDEX calls_lead ON calls (lead_id) WHERE lead_id IS NOT NULL;

-- Equal at every commit to the aggregate over calls and leads (maintained by exact deltas).
CREATE TABLE daily_stats (
    org_id            uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    day               date NOT NULL,
    calls             integer NOT NULL DEFAULT 0,
    inbound           integer NOT NULL DEFAULT 0,
    outbound          integer NOT NULL DEFAULT 0,
    web               integer NOT NULL DEFAULT 0,
    new_leads         integer NOT NULL DEFAULT 0,
    duration_seconds  numeric NOT NULL DEFAULT 0,
    cost              numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, day)
);

-- Every accepted event, raw, for audit and replay; pruned after EVENT_RETENTION_DAYS.
CREATE TABLE events (
    message_id    text PRIMARY KEY,
    org_id        uuid,
    received_at   timestamptz NOT NULL,
    message_type  text NOT NULL,
    call_id       text,
    dedupe_key    text,
    endpoint_id   text,
    body          bytea NOT NULL
);
CREATE INDEX events_received_at ON events (received_at);
CREATE INDEX events_org_received ON events (org_id, received_at);

-- Events no organization matched yet; processed again when a mapping that matches is added.
CREATE TABLE unassigned_events (
    message_id        text PRIMARY KEY REFERENCES events (message_id) ON DELETE CASCADE,
    received_at       timestamptz NOT NULL,
    phone_number_id   text,
    dialled_number    text,
    vapi_org_id       text,
    metadata_org_ids  text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX unassigned_phone_number_id ON unassigned_events (phone_number_id);
CREATE INDEX unassigned_dialled_number ON unassigned_events (dialled_number);
CREATE INDEX unassigned_vapi_org_id ON unassigned_events (vapi_org_id);
