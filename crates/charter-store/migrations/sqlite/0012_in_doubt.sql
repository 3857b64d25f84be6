-- Actions left in doubt by interrupted runs (intent recorded, outcome never), listed for
-- operators newest first. A partial index: only such rows are in it, so it stays tiny and
-- costs the hot path (actions written as pending, then finished) nothing.
CREATE INDEX action_records_in_doubt ON action_records (id) WHERE status = 'in_doubt';
