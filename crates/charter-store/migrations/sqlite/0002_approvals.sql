-- Charter SQLite schema, version 2: approvals, escalations and the audit log in use.

-- A reviewer's edit of an approval's parameters (a human correction) and its hash; the
-- approved action runs with these instead of `params`.
ALTER TABLE approvals ADD COLUMN edited_params TEXT;
ALTER TABLE approvals ADD COLUMN edited_hash TEXT;

-- One approval per (event, action, exact parameters): re-runs find it instead of asking again.
CREATE UNIQUE INDEX approvals_key ON approvals (event_id, action, params_hash);

-- At most one open escalation per event: re-runs find it instead of opening another.
CREATE UNIQUE INDEX escalations_open ON escalations (event_id) WHERE status = 'open';

-- Listing one charter's audit entries newest first.
CREATE INDEX audit_log_charter ON audit_log (charter, seq);
