-- Charter SQLite schema, version 3: reports and alert incidents.

-- Reports count runs by the time they finished.
CREATE INDEX runs_charter_finished ON runs (charter, finished_at);

-- One span of time during which an alert's condition held. At most one open incident per
-- (charter, alert): evaluations find it instead of opening another, so each incident is
-- announced once and resolved once.
CREATE TABLE alert_incidents (
    id                   TEXT PRIMARY KEY,
    charter              TEXT NOT NULL,
    alert                TEXT NOT NULL,      -- the alert's key within the charter
    state                TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved')),
    opened_at            INTEGER NOT NULL,
    resolved_at          INTEGER,
    value                REAL NOT NULL,      -- what tripped it (rate, age in ms, count)
    detail               TEXT NOT NULL,      -- JSON
    notified_open_at     INTEGER,            -- "firing" delivered
    notified_resolved_at INTEGER             -- "resolved" delivered
);
CREATE UNIQUE INDEX alert_incidents_open ON alert_incidents (charter, alert) WHERE state = 'open';
CREATE INDEX alert_incidents_charter ON alert_incidents (charter, opened_at);
