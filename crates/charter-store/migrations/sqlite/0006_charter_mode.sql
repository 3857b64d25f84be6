-- Charter SQLite schema, migration 0006: an operator's mode override per charter.
--
-- `mode` is the mode an operator set (promote to live / demote to shadow), `mode_base` the
-- mode the charter file declared at that moment. The override applies only while the file
-- still declares `mode_base`: editing `mode:` in the file afterwards is the newer decision
-- and wins. Both NULL: no override, the file's mode applies.
ALTER TABLE charter_state ADD COLUMN mode TEXT CHECK (mode IN ('shadow', 'live'));
ALTER TABLE charter_state ADD COLUMN mode_base TEXT CHECK (mode_base IN ('shadow', 'live'));
ALTER TABLE charter_state ADD COLUMN mode_by TEXT;
ALTER TABLE charter_state ADD COLUMN mode_at INTEGER;
