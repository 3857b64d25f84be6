-- Charter PostgreSQL schema, version 3: reports and alert incidents.

-- Reports count runs by the time they finished.
CREATE INDEX runs_charter_finished ON runs (charter, finished_at);

-- One span of time during which an alert's condition held. At most one open incident per
-- (charter, alert): evaluations find it instead of opening another, so each incident is
-- announced once and resolved once.
CREATE TABLE alert_incidents (
    id                   UUID PRIMARY KEY,
    charter              TEXT NOT NULL,
    alert                TEXT NOT NULL,
    state                TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved')),
    opened_at            BIGINT NOT NULL,
    resolved_at          BIGINT,
    value                DOUBLE PRECISION NOT NULL,
    detail               JSONB NOT NULL,
    notified_open_at     BIGINT,
    notified_resolved_at BIGINT
);
CREATE UNIQUE INDEX alert_incidents_open ON alert_incidents (charter, alert) WHERE state = 'open';
CREATE INDEX alert_incidents_charter ON alert_incidents (charter, opened_at);
