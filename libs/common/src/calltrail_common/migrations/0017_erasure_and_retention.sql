-- Erasure and retention (issue 19, decision 44).
--
-- `deleted`: Vapi deleted the call (`call.deleted`). The row stays as a tombstone, with
-- every field cleared, so that a status-update, report or snapshot arriving later cannot
-- bring it back; it counts in no figure (stats_day is NULL). Written by the processor.
-- `erased_at`: the caller was erased (calltrail_common.erasure): its personal fields are
-- cleared and the processor never fills them again. `content_purged_at`: the
-- organization's retention removed the transcript and the recordings, which the processor
-- never fills again either.
ALTER TABLE calls
    ADD COLUMN deleted            boolean NOT NULL DEFAULT false,
    ADD COLUMN erased_at          timestamptz,
    ADD COLUMN content_purged_at  timestamptz;

-- How long an organization keeps transcripts, recordings and archived raw events, in days;
-- NULL: forever (the default). The figures are kept whatever this says.
ALTER TABLE organizations
    ADD COLUMN content_retention_days integer CHECK (content_retention_days BETWEEN 1 AND 36500);
