-- Organizations (tenants), their per-organization webhook endpoints and API tokens.
CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Ingest keeps these in memory (refreshed on NOTIFY and on a timer) so that its request
-- path never touches Postgres. The secret is stored as issued: verifying an HMAC needs it.
CREATE TABLE webhook_endpoints (
    id          text PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX webhook_endpoints_org_id ON webhook_endpoints (org_id);

-- Tenant API tokens, stored only as their SHA-256 digest.
CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    token_sha256  bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_org_id ON api_tokens (org_id);

CREATE FUNCTION notify_webhook_endpoints_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('calltrail_webhook_endpoints', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER webhook_endpoints_changed
AFTER INSERT OR UPDATE OR DELETE ON webhook_endpoints
FOR EACH STATEMENT EXECUTE FUNCTION notify_webhook_endpoints_changed();
