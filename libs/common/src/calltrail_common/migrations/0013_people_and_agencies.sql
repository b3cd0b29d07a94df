-- People who sign in as themselves, their roles per organization, server-side sessions,
-- invitation and reset links, API tokens that say who made them, an audit log, and
-- agencies with client organizations (issue 17; decision 0035).

-- An agency serves client organizations; a client belongs to at most one agency, and an
-- agency is never itself a client (checked in calltrail_common.agencies, and here by the
-- trigger below). The markup is the agency's, shown to the client's users on every cost.
ALTER TABLE organizations
    ADD COLUMN kind            text NOT NULL DEFAULT 'business'
                               CHECK (kind IN ('business', 'agency')),
    ADD COLUMN agency_id       uuid REFERENCES organizations (id) ON DELETE RESTRICT,
    ADD COLUMN markup_percent  numeric(7, 3) NOT NULL DEFAULT 0
                               CHECK (markup_percent >= 0 AND markup_percent <= 1000),
    -- Branding: an agency's name (organizations.name), logo and accent colour, shown to
    -- its clients' users and on the sign-in page of its own host name.
    ADD COLUMN brand_logo_url  text CHECK (brand_logo_url IS NULL
                                           OR brand_logo_url LIKE 'https://%'),
    ADD COLUMN brand_accent    text CHECK (brand_accent IS NULL
                                           OR brand_accent ~ '^#[0-9a-f]{6}$'),
    ADD COLUMN host_name       text UNIQUE CHECK (host_name IS NULL
                                                  OR host_name = lower(host_name)),
    ADD CONSTRAINT organizations_not_own_agency CHECK (agency_id IS DISTINCT FROM id);
CREATE INDEX organizations_agency_id ON organizations (agency_id) WHERE agency_id IS NOT NULL;

CREATE FUNCTION check_agency_of_client() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.agency_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM organizations
            WHERE id = NEW.agency_id AND kind = 'agency' AND agency_id IS NULL) THEN
        RAISE EXCEPTION 'organization % is not an agency', NEW.agency_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.kind = 'agency' AND NEW.agency_id IS NOT NULL THEN
        RAISE EXCEPTION 'an agency cannot be a client' USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.kind <> 'agency' AND EXISTS (
            SELECT 1 FROM organizations WHERE agency_id = NEW.id) THEN
        RAISE EXCEPTION 'organization % has clients', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER organizations_agency_checked
BEFORE INSERT OR UPDATE OF kind, agency_id ON organizations
FOR EACH ROW EXECUTE FUNCTION check_agency_of_client();

CREATE TABLE users (
    id                   uuid PRIMARY KEY,
    email                text NOT NULL CHECK (email = lower(email) AND email LIKE '%_@_%'),
    name                 text,
    -- argon2id (calltrail_common.people); NULL until the invitation is accepted.
    password_hash        text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    password_changed_at  timestamptz
);
CREATE UNIQUE INDEX users_email ON users (email);

-- A membership of an agency gives the same role in each of its clients.
CREATE TABLE memberships (
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'viewer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, org_id)
);
CREATE INDEX memberships_org_id ON memberships (org_id);

-- Dashboard sessions: the cookie holds a random id; only its SHA-256 digest is stored.
-- `org_id` is the organization being looked at (an agency's user switches between clients).
CREATE TABLE sessions (
    id_sha256     bytea PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Invitation and password-reset links: single use, expiring, stored as digests.
CREATE TABLE user_links (
    token_sha256  bytea PRIMARY KEY,
    purpose       text NOT NULL CHECK (purpose IN ('invite', 'reset')),
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id        uuid REFERENCES organizations (id) ON DELETE CASCADE,
    role          text CHECK (role IN ('owner', 'admin', 'viewer')),
    created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    CHECK (purpose = 'reset' OR (org_id IS NOT NULL AND role IS NOT NULL))
);
CREATE INDEX user_links_user_id ON user_links (user_id);

-- Failed sign-ins, per account and per address, for throttling; old rows are pruned.
CREATE TABLE sign_in_failures (
    key  text NOT NULL,                     -- 'account:<email>' | 'address:<ip>'
    at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sign_in_failures_key_at ON sign_in_failures (key, at);

-- API tokens stay for machines: a name, the first characters to recognise one by, who
-- made it and when it was last used.
ALTER TABLE api_tokens
    ADD COLUMN name           text,
    ADD COLUMN prefix         text,
    ADD COLUMN created_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN created_via    text NOT NULL DEFAULT 'cli',   -- cli | dashboard | api
    ADD COLUMN last_used_at   timestamptz;

-- Who did what to an organization's keys, tokens, secrets, people and data. Never a
-- secret, never a caller's personal data.
CREATE TABLE audit_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL,        -- 'user:<email>' | 'token:<prefix>' | 'cli'
    actor_user_id uuid REFERENCES users (id) ON DELETE SET NULL,
    action        text NOT NULL,
    target        text,
    detail        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_org_at ON audit_log (org_id, at DESC);
