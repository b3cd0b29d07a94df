-- The tenant API's lists (contract section 7): leads newest first, paged by (created_at, id),
-- which never change for a lead. Calls page over calls_org_created (0002).
CREATE INDEX leads_org_created ON leads (org_id, created_at DESC, id DESC);
