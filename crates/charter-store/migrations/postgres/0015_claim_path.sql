-- The claim path built for a cluster (issue #29).
--
-- Indexes that match the claim exactly, so that a claim's cost does not grow with the
-- backlog or with the done events kept for evidence: the oldest pending events of a charter
-- (by id, which is arrival order), and the events in processing of a charter by lease
-- expiry (the expired ones are reclaimable). Both are partial: a done event is in neither.
CREATE INDEX events_pending ON events (charter, id) WHERE status = 'pending';
CREATE INDEX events_leased ON events (charter, lease_until) WHERE status = 'processing';

-- The per-charter concurrency limit as slot rows: a charter with limit N uses slots
-- 0..N-1; a claim takes free slots with FOR UPDATE SKIP LOCKED (so concurrent claims on
-- several nodes take different slots and never wait for each other) and records in each the
-- event it holds and that event's lease expiry. A slot is free when it holds nothing or its
-- lease has expired. Renewing a lease renews its slot; releasing an event frees its slot.
-- Rows are created on a charter's first claim (one per slot, up to the limit seen).
CREATE TABLE claim_slots (
    charter     TEXT NOT NULL,
    slot        INTEGER NOT NULL,
    event_id    UUID,                      -- the event holding the slot (NULL: free)
    lease_until BIGINT,                    -- that event's lease expiry (NULL: free)
    PRIMARY KEY (charter, slot)
) WITH (fillfactor = 50);                  -- room for HOT updates: slots change on every claim

-- The slot an event in processing holds (NULL before this migration and when not claimed).
ALTER TABLE events ADD COLUMN claim_slot INTEGER;

-- An assertion inside a statement: raises `no_data_found` (SQLSTATE P0002) naming `what`
-- when `n` is 0, else returns `n`. A run's writes are sent together with their COMMIT in one
-- round trip; a write that must find its row (a decision for a run that exists) fails the
-- transaction through this instead of being checked by the client after the commit.
CREATE FUNCTION charter_expect_found(n BIGINT, what TEXT) RETURNS BIGINT
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF n = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'no_data_found', MESSAGE = what || ' not found';
    END IF;
    RETURN n;
END
$$;
