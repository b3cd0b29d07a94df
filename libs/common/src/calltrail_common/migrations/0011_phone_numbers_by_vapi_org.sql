-- Issue 17 (decision 33): numbers learnt from a connected Vapi account are keyed by Vapi's
-- phone-number id within its Vapi org; numbers registered by hand (`calltrail phone-number
-- add`) have no Vapi org. Rows registered before this migration count as registered by
-- hand until their account's next sync relabels its own.
ALTER TABLE phone_numbers ADD COLUMN vapi_org_id text;
ALTER TABLE phone_numbers DROP CONSTRAINT phone_numbers_vapi_phone_number_id_key;
CREATE UNIQUE INDEX phone_numbers_vapi_id_within_vapi_org
    ON phone_numbers (coalesce(vapi_org_id, ''), vapi_phone_number_id)
    WHERE vapi_phone_number_id IS NOT NULL;
CREATE INDEX phone_numbers_vapi_phone_number_id ON phone_numbers (vapi_phone_number_id);

-- A number an account lists that another organization already has: recorded for the
-- operator (`calltrail phone-number conflicts`, the settings page), never settled silently.
-- `org_id` is the organization whose account lists it, `held_by` the one that has it.
CREATE TABLE phone_number_conflicts (
    id                    uuid PRIMARY KEY,
    org_id                uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    vapi_org_id           text NOT NULL,
    vapi_phone_number_id  text,
    number                text,
    held_by               uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    first_seen_at         timestamptz NOT NULL DEFAULT now(),
    last_seen_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX phone_number_conflicts_key ON phone_number_conflicts
    (org_id, held_by, coalesce(vapi_phone_number_id, ''), coalesce(number, ''));
CREATE INDEX phone_number_conflicts_held_by ON phone_number_conflicts (held_by);

-- Why an event was kept aside: no organization matched, or its keys disagree with the
-- organization of call.orgId's account.
ALTER TABLE unassigned_events ADD COLUMN reason text NOT NULL
    DEFAULT 'no organization matches';
