-- The events table's status CHECK becomes a chain of comparisons. SQLite evaluates
-- `status IN (<five literals>)` by building a temporary b-tree of the five values on every
-- INSERT and every status UPDATE (lists of more than two constants are looked up that way),
-- which cost the durable ingest path a b-tree open, five inserts and a close per event.
-- The accepted values are unchanged.
--
-- SQLite cannot alter a CHECK in place, so the table is rebuilt (the documented procedure:
-- create, copy, drop, rename, re-index). The store runs migrations with foreign keys off
-- and checks them before each commit, since `runs.event_id` references this table.
CREATE TABLE events_rebuilt (
    id          TEXT PRIMARY KEY,          -- UUIDv7: ordering by id is ordering by arrival
    charter     TEXT NOT NULL,             -- the charter whose trigger received it
    source      TEXT NOT NULL,             -- webhook:/hooks/..., cli, replay, ...
    event_type  TEXT,                      -- optional type (e.g. X-GitHub-Event)
    dedupe_key  TEXT,                      -- NULL: never a duplicate
    received_at INTEGER NOT NULL,
    headers     TEXT NOT NULL,             -- JSON object of selected headers
    payload     TEXT NOT NULL,             -- JSON payload
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status = 'pending' OR status = 'processing' OR status = 'done'
                       OR status = 'failed' OR status = 'waiting'),
    attempts    INTEGER NOT NULL DEFAULT 0, -- runs started (claims), replays included
    lease_owner TEXT,                      -- worker holding the lease while processing
    lease_until INTEGER,                   -- lease expiry; an expired lease is reclaimable
    updated_at  INTEGER NOT NULL
);
INSERT INTO events_rebuilt (id, charter, source, event_type, dedupe_key, received_at, headers,
                            payload, status, attempts, lease_owner, lease_until, updated_at)
    SELECT id, charter, source, event_type, dedupe_key, received_at, headers,
           payload, status, attempts, lease_owner, lease_until, updated_at
    FROM events ORDER BY id;
DROP TABLE events;
ALTER TABLE events_rebuilt RENAME TO events;
CREATE UNIQUE INDEX events_dedupe ON events (charter, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX events_claim ON events (charter, status, id);
CREATE INDEX events_charter ON events (charter, id);
