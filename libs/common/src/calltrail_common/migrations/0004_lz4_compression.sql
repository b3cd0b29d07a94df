-- Archived bodies (1-35 KB of JSON, every event) and transcripts are compressed when
-- stored; with the default pglz that was the largest single cost of a batch in Postgres
-- (about 150 us per body here, lz4 about 50 us). Values stored from now on.
-- A server built without lz4 keeps pglz: slower, never a failed migration.
DO $$
BEGIN
    ALTER TABLE events ALTER COLUMN body SET COMPRESSION lz4;
    ALTER TABLE calls ALTER COLUMN transcript SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available on this server: archive compression stays pglz';
END
$$;
