-- Set-up that wires itself (decision 47). When Calltrail points an assistant or a phone
-- number of the organization's Vapi account at its ingest endpoint, it keeps what was there
-- before, so "Unwire" can put it back; and it remembers the webhook credential it made in
-- Vapi for the organization, reused while the webhook secret it carries is current.
-- Written only by calltrail_common.vapi_wiring.

CREATE TABLE vapi_wiring (
    org_id                    uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind                      text NOT NULL CHECK (kind IN ('assistant', 'phone-number')),
    vapi_id                   text NOT NULL,
    -- Vapi's `server` and `serverMessages` before the first wiring, as Vapi answered them;
    -- NULL: the field was not set (Vapi's defaults applied).
    previous_server           jsonb,
    previous_server_messages  jsonb,
    credential_id             text NOT NULL,
    wired_at                  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, kind, vapi_id)
);

CREATE TABLE vapi_wiring_credentials (
    org_id            uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    credential_id     text NOT NULL,
    -- Which webhook secret the credential carries, by when it was issued (never the secret).
    secret_issued_at  timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
