-- Charter SQLite schema, version 1.
--
-- Conventions: ids are UUIDs stored as lower-case hyphenated TEXT (UUIDv7 text sorts by
-- creation time); times are INTEGER Unix milliseconds (UTC); JSON is stored as TEXT.
-- Applied once, inside a transaction, by the store on open (tracked by PRAGMA user_version).

-- Small key/value facts about the store itself (for example the last readiness probe).
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Every event as received, and where it is in its life.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,          -- UUIDv7: ordering by id is ordering by arrival
    charter     TEXT NOT NULL,             -- the charter whose trigger received it
    source      TEXT NOT NULL,             -- webhook:/hooks/..., cli, replay, ...
    event_type  TEXT,                      -- optional type (e.g. X-GitHub-Event)
    dedupe_key  TEXT,                      -- NULL: never a duplicate
    received_at INTEGER NOT NULL,
    headers     TEXT NOT NULL,             -- JSON object of selected headers
    payload     TEXT NOT NULL,             -- JSON payload
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'processing', 'done', 'failed', 'waiting')),
    attempts    INTEGER NOT NULL DEFAULT 0, -- runs started (claims), replays included
    lease_owner TEXT,                      -- worker holding the lease while processing
    lease_until INTEGER,                   -- lease expiry; an expired lease is reclaimable
    updated_at  INTEGER NOT NULL
);
-- Race-free dedupe: one event per (charter, dedupe_key).
CREATE UNIQUE INDEX events_dedupe ON events (charter, dedupe_key) WHERE dedupe_key IS NOT NULL;
-- Claiming (oldest pending of a charter), live-lease counting and listing by charter+status.
CREATE INDEX events_claim ON events (charter, status, id);
-- Listing one charter's events newest first.
CREATE INDEX events_charter ON events (charter, id);

-- Payloads that failed their charter's input contract, kept for replay.
CREATE TABLE rejected (
    id          TEXT PRIMARY KEY,
    charter     TEXT NOT NULL,
    source      TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    headers     TEXT NOT NULL,             -- JSON object
    body        TEXT NOT NULL,             -- body as received (lossy UTF-8)
    reasons     TEXT NOT NULL              -- JSON array of violation strings
);
CREATE INDEX rejected_charter ON rejected (charter, id);

-- One processing of one event by one charter version.
CREATE TABLE runs (
    id                  TEXT PRIMARY KEY,
    event_id            TEXT NOT NULL REFERENCES events (id),
    charter             TEXT NOT NULL,
    charter_version     TEXT NOT NULL,     -- hash of the charter definition used
    mode                TEXT NOT NULL,     -- shadow | live
    started_at          INTEGER NOT NULL,
    finished_at         INTEGER,
    outcome             TEXT,              -- completed | no_route | shadow | failed | escalated
    route               INTEGER,           -- index of the matched route
    error               TEXT,
    decision            TEXT,              -- JSON Decision, once decided
    decision_label      TEXT,              -- copies of decision fields, for queries/measurements
    decision_stage      TEXT,
    decision_confidence REAL
);
CREATE INDEX runs_event ON runs (event_id, started_at);
CREATE INDEX runs_charter ON runs (charter, started_at);

-- Actions a run intended to execute (written before any request leaves) and their outcome.
CREATE TABLE action_records (
    id              INTEGER PRIMARY KEY,   -- insertion order = order within the run
    run_id          TEXT NOT NULL REFERENCES runs (id),
    action          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    params          TEXT NOT NULL,         -- JSON rendered parameters (never secrets)
    status          TEXT NOT NULL DEFAULT 'pending', -- pending, then an ActionStatus
    UNIQUE (run_id, action)
);
CREATE INDEX action_records_key ON action_records (idempotency_key);

-- Each try at executing an action.
CREATE TABLE action_attempts (
    action_id   INTEGER NOT NULL REFERENCES action_records (id),
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    http_status INTEGER,
    error       TEXT,
    ok          INTEGER NOT NULL,          -- 0/1
    PRIMARY KEY (action_id, attempt)
) WITHOUT ROWID;

-- Idempotency keys of actions that succeeded: such an action is never executed again.
CREATE TABLE succeeded_keys (
    idempotency_key TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL,
    action          TEXT NOT NULL,
    succeeded_at    INTEGER NOT NULL
) WITHOUT ROWID;

-- Operator state per charter.
CREATE TABLE charter_state (
    charter    TEXT PRIMARY KEY,
    paused     INTEGER NOT NULL DEFAULT 0, -- 0/1
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Actions waiting for a human decision, bound to the exact parameters (by hash).
-- (Created now; used by a later issue.)
CREATE TABLE approvals (
    id          TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id),
    event_id    TEXT NOT NULL,
    charter     TEXT NOT NULL,
    action      TEXT NOT NULL,
    params      TEXT NOT NULL,             -- JSON parameters shown to reviewers
    params_hash TEXT NOT NULL,             -- what an approval is bound to
    reviewers   TEXT NOT NULL,             -- JSON array of users/groups
    status      TEXT NOT NULL DEFAULT 'pending', -- pending | approved | rejected | expired
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    on_expiry   TEXT,
    decided_by  TEXT,
    decided_at  INTEGER,
    comment     TEXT
);
CREATE INDEX approvals_status ON approvals (status, charter, created_at);
CREATE INDEX approvals_run ON approvals (run_id);

-- Work handed to a human, with the reason. (Created now; used by a later issue.)
CREATE TABLE escalations (
    id          TEXT PRIMARY KEY,
    run_id      TEXT,
    event_id    TEXT NOT NULL,
    charter     TEXT NOT NULL,
    reason      TEXT NOT NULL,             -- low_confidence | invalid_output | budget | dead_letter ...
    detail      TEXT,                      -- JSON
    target      TEXT,                      -- who it was handed to
    status      TEXT NOT NULL DEFAULT 'open', -- open | resolved
    created_at  INTEGER NOT NULL,
    resolved_by TEXT,
    resolved_at INTEGER,
    resolution  TEXT                       -- JSON (e.g. the human's decision)
);
CREATE INDEX escalations_status ON escalations (status, charter, created_at);
CREATE INDEX escalations_event ON escalations (event_id);

-- Who did what, when (operator actions, approvals, config changes). Append-only.
-- (Created now; used by a later issue.)
CREATE TABLE audit_log (
    seq     INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    charter TEXT,
    target  TEXT,
    detail  TEXT                           -- JSON
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Named outcomes recorded for runs, built-in and charter-defined.
-- (Created now; used by a later issue.)
CREATE TABLE measurements (
    seq      INTEGER PRIMARY KEY,
    charter  TEXT NOT NULL,
    name     TEXT NOT NULL,
    run_id   TEXT,
    event_id TEXT,
    value    REAL NOT NULL DEFAULT 1,
    at       INTEGER NOT NULL,
    detail   TEXT                          -- JSON
);
CREATE INDEX measurements_charter ON measurements (charter, name, at);
