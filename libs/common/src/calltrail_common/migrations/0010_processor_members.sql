-- The call-processor replicas alive now: each renews its row every second or so, and the
-- partitions are shared out among the rows renewed lately (call_processor/partitions.py).
-- A replica that stops deletes its row; a killed one's row ages out.
CREATE TABLE processor_members (
    member_id     text PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);
