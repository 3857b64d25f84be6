-- Charter store schema for PostgreSQL, version 1. The same tables and meaning as the SQLite
-- schema (migrations/sqlite/0001_init.sql), in PostgreSQL types: ids are UUID (UUIDv7 sorts
-- by creation time, and PostgreSQL compares UUIDs bytewise, so ORDER BY id is arrival order);
-- times are BIGINT Unix milliseconds (UTC); JSON is JSONB.
-- Applied once, inside the migration transaction, by the store on connect (tracked in
-- charter_schema_version).

-- Small key/value facts about the store itself (for example the last readiness probe).
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Every event as received, and where it is in its life.
CREATE TABLE events (
    id          UUID PRIMARY KEY,          -- UUIDv7: ordering by id is ordering by arrival
    charter     TEXT NOT NULL,             -- the charter whose trigger received it
    source      TEXT NOT NULL,             -- webhook:/hooks/..., cli, replay, ...
    event_type  TEXT,                      -- optional type (e.g. X-GitHub-Event)
    dedupe_key  TEXT,                      -- NULL: never a duplicate
    received_at BIGINT NOT NULL,
    headers     JSONB NOT NULL,            -- object of selected headers
    payload     JSONB NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'processing', 'done', 'failed', 'waiting')),
    attempts    BIGINT NOT NULL DEFAULT 0, -- runs started (claims), replays included
    lease_owner TEXT,                      -- worker holding the lease while processing
    lease_until BIGINT,                    -- lease expiry; an expired lease is reclaimable
    updated_at  BIGINT NOT NULL,
    -- Race-free dedupe: one event per (charter, dedupe_key). NULL keys never conflict.
    CONSTRAINT events_dedupe UNIQUE (charter, dedupe_key)
);
-- Claiming (oldest pending of a charter), live-lease counting and listing by charter+status.
CREATE INDEX events_claim ON events (charter, status, id);
-- Listing one charter's events newest first.
CREATE INDEX events_charter ON events (charter, id);

-- Payloads that failed their charter's input contract, kept for replay.
CREATE TABLE rejected (
    id          UUID PRIMARY KEY,
    charter     TEXT NOT NULL,
    source      TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    headers     JSONB NOT NULL,            -- object
    body        BYTEA NOT NULL,            -- UTF-8 body as received (BYTEA: may hold NUL)
    reasons     JSONB NOT NULL             -- array of violation strings
);
CREATE INDEX rejected_charter ON rejected (charter, id);

-- One processing of one event by one charter version.
CREATE TABLE runs (
    id                  UUID PRIMARY KEY,
    seq                 BIGINT GENERATED ALWAYS AS IDENTITY, -- insertion order
    event_id            UUID NOT NULL REFERENCES events (id),
    charter             TEXT NOT NULL,
    charter_version     TEXT NOT NULL,     -- hash of the charter definition used
    mode                TEXT NOT NULL,     -- shadow | live
    started_at          BIGINT NOT NULL,
    finished_at         BIGINT,
    outcome             TEXT,              -- completed | no_route | shadow | failed | escalated
    route               BIGINT,            -- index of the matched route
    error               TEXT,
    decision            JSONB,             -- Decision, once decided
    decision_label      TEXT,              -- copies of decision fields, for queries/measurements
    decision_stage      TEXT,
    decision_confidence DOUBLE PRECISION
);
CREATE INDEX runs_event ON runs (event_id, started_at, seq);
CREATE INDEX runs_charter ON runs (charter, started_at);

-- Actions a run intended to execute (written before any request leaves) and their outcome.
CREATE TABLE action_records (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- order within the run
    run_id          UUID NOT NULL REFERENCES runs (id),
    action          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    params          JSONB NOT NULL,        -- rendered parameters (never secrets)
    status          TEXT NOT NULL DEFAULT 'pending', -- pending, then an ActionStatus
    UNIQUE (run_id, action)
);
CREATE INDEX action_records_key ON action_records (idempotency_key);

-- Each try at executing an action.
CREATE TABLE action_attempts (
    action_id   BIGINT NOT NULL REFERENCES action_records (id),
    attempt     BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    http_status INTEGER,
    error       TEXT,
    ok          BOOLEAN NOT NULL,
    PRIMARY KEY (action_id, attempt)
);

-- Idempotency keys of actions that succeeded: such an action is never executed again.
CREATE TABLE succeeded_keys (
    idempotency_key TEXT PRIMARY KEY,
    run_id          UUID NOT NULL,
    action          TEXT NOT NULL,
    succeeded_at    BIGINT NOT NULL
);

-- Operator state per charter. Claims also lock a charter's row here (creating it if
-- missing) so that the per-charter limit holds across nodes.
CREATE TABLE charter_state (
    charter    TEXT PRIMARY KEY,
    paused     BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL
);

-- Actions waiting for a human decision, bound to the exact parameters (by hash).
-- (Created now; used by a later issue.)
CREATE TABLE approvals (
    id          UUID PRIMARY KEY,
    run_id      UUID NOT NULL REFERENCES runs (id),
    event_id    UUID NOT NULL,
    charter     TEXT NOT NULL,
    action      TEXT NOT NULL,
    params      JSONB NOT NULL,            -- parameters shown to reviewers
    params_hash TEXT NOT NULL,             -- what an approval is bound to
    reviewers   JSONB NOT NULL,            -- array of users/groups
    status      TEXT NOT NULL DEFAULT 'pending', -- pending | approved | rejected | expired
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    on_expiry   TEXT,
    decided_by  TEXT,
    decided_at  BIGINT,
    comment     TEXT
);
CREATE INDEX approvals_status ON approvals (status, charter, created_at);
CREATE INDEX approvals_run ON approvals (run_id);

-- Work handed to a human, with the reason. (Created now; used by a later issue.)
CREATE TABLE escalations (
    id          UUID PRIMARY KEY,
    run_id      UUID,
    event_id    UUID NOT NULL,
    charter     TEXT NOT NULL,
    reason      TEXT NOT NULL,             -- low_confidence | invalid_output | budget | dead_letter ...
    detail      JSONB,
    target      TEXT,                      -- who it was handed to
    status      TEXT NOT NULL DEFAULT 'open', -- open | resolved
    created_at  BIGINT NOT NULL,
    resolved_by TEXT,
    resolved_at BIGINT,
    resolution  JSONB                      -- e.g. the human's decision
);
CREATE INDEX escalations_status ON escalations (status, charter, created_at);
CREATE INDEX escalations_event ON escalations (event_id);

-- Who did what, when (operator actions, approvals, config changes). Append-only.
-- (Created now; used by a later issue.)
CREATE TABLE audit_log (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    charter TEXT,
    target  TEXT,
    detail  JSONB
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Named outcomes recorded for runs, built-in and charter-defined.
-- (Created now; used by a later issue.)
CREATE TABLE measurements (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    charter  TEXT NOT NULL,
    name     TEXT NOT NULL,
    run_id   UUID,
    event_id UUID,
    value    DOUBLE PRECISION NOT NULL DEFAULT 1,
    at       BIGINT NOT NULL,
    detail   JSONB
);
CREATE INDEX measurements_charter ON measurements (charter, name, at);
