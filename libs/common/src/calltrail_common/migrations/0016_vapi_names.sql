-- Issue 19 (decision 43): what the organization's Vapi account calls its assistants and
-- phone numbers, so pages show "Receptionist" instead of a UUID. metrics-sync writes it from
-- `GET /assistant` and `GET /phone-number` on each round (only names that changed); the api
-- reads it next to calls.assistant_id / phone_number_id. An id that leaves Vapi's list keeps
-- its last name: old calls still point at it.
CREATE TABLE vapi_names (
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('assistant', 'phone_number')),
    vapi_id     text NOT NULL,
    name        text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),  -- when this name was first seen
    PRIMARY KEY (org_id, kind, vapi_id)
);
