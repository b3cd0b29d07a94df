-- Webhook secret rotation (decision 34). An endpoint's current secret stays in
-- webhook_endpoints.secret (what older processes read); rotating it keeps the secret it
-- replaced in webhook_previous_secrets, accepted by ingest until valid_until. One previous
-- secret per endpoint: rotating again replaces it; revoking deletes it.
ALTER TABLE webhook_endpoints ADD COLUMN secret_created_at timestamptz;
UPDATE webhook_endpoints SET secret_created_at = created_at;
ALTER TABLE webhook_endpoints
    ALTER COLUMN secret_created_at SET DEFAULT now(),
    ALTER COLUMN secret_created_at SET NOT NULL;

CREATE TABLE webhook_previous_secrets (
    endpoint_id  text PRIMARY KEY REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    secret       text NOT NULL,
    valid_until  timestamptz NOT NULL
);

-- Ingest reloads its endpoints on this notification too, so a rotation or a revocation
-- reaches it within a second.
CREATE TRIGGER webhook_previous_secrets_changed
AFTER INSERT OR UPDATE OR DELETE ON webhook_previous_secrets
FOR EACH STATEMENT EXECUTE FUNCTION notify_webhook_endpoints_changed();
