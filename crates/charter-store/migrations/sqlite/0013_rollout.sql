-- Charter SQLite schema, migration 0013: rollout per route.
--
-- route_state: an operator's mode per route (promote / demote), kept like the charter-wide
-- override of migration 0006: `mode_base` is the mode the files declared for the route when
-- it was set, and the override applies only while they still do. `suggested_at`: when the
-- owner was told the route meets its `promote_when` (once per mode change).
CREATE TABLE route_state (
    charter      TEXT NOT NULL,
    route        TEXT NOT NULL,
    mode         TEXT CHECK (mode IN ('shadow', 'approve', 'live')),
    mode_base    TEXT CHECK (mode_base IN ('shadow', 'approve', 'live')),
    mode_by      TEXT,
    mode_at      INTEGER,
    reason       TEXT,
    suggested_at INTEGER,
    PRIMARY KEY (charter, route)
);

-- review_samples: runs queued for a reviewer (a share of each route's runs, `sample:`).
-- `actions` is the JSON array of the run's actions as recorded (would-run in shadow);
-- a review sets `decision_right`, `right_label` (a correction when the decision was
-- wrong), `action_verdicts` (JSON object action -> right) and `agreed` (all right).
CREATE TABLE review_samples (
    id             TEXT PRIMARY KEY,
    run_id         TEXT NOT NULL UNIQUE,
    event_id       TEXT NOT NULL,
    charter        TEXT NOT NULL,
    route          TEXT NOT NULL,
    mode           TEXT NOT NULL,
    label          TEXT,
    actions        TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    reviewed_by    TEXT,
    reviewed_at    INTEGER,
    decision_right INTEGER,
    right_label    TEXT,
    action_verdicts TEXT,
    agreed         INTEGER,
    note           TEXT
);
CREATE INDEX review_samples_queue ON review_samples (charter, route, reviewed_at, created_at);

-- draft_rewrites: for each approved action that carried a draft, the draft's text and the
-- text the reviewer approved, with their edit distance (characters and words).
CREATE TABLE draft_rewrites (
    approval_id  TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    charter      TEXT NOT NULL,
    route        TEXT,
    action       TEXT NOT NULL,
    draft        TEXT NOT NULL,
    approved     TEXT NOT NULL,
    chars        INTEGER NOT NULL,
    draft_chars  INTEGER NOT NULL,
    words        INTEGER NOT NULL,
    draft_words  INTEGER NOT NULL,
    edited_by    TEXT NOT NULL,
    at           INTEGER NOT NULL
);
CREATE INDEX draft_rewrites_charter ON draft_rewrites (charter, at);
