-- Columns that hold what senders sent, or values derived from it, become JSON instead of
-- JSONB. JSONB cannot hold the character U+0000 ("\u0000" inside a JSON string), so a
-- payload carrying one could not be stored (and a run rendering it into parameters would
-- fail on every retry). JSON keeps the text exactly as given, NUL escapes included. None of
-- these columns is queried with JSONB operators; the audit log and alert incidents, which
-- hold only what Charter writes itself, stay JSONB.
ALTER TABLE events         ALTER COLUMN headers       TYPE JSON USING headers::json;
ALTER TABLE events         ALTER COLUMN payload       TYPE JSON USING payload::json;
ALTER TABLE runs           ALTER COLUMN decision      TYPE JSON USING decision::json;
ALTER TABLE action_records ALTER COLUMN params        TYPE JSON USING params::json;
ALTER TABLE approvals      ALTER COLUMN params        TYPE JSON USING params::json;
ALTER TABLE approvals      ALTER COLUMN edited_params TYPE JSON USING edited_params::json;
ALTER TABLE escalations    ALTER COLUMN detail        TYPE JSON USING detail::json;
ALTER TABLE escalations    ALTER COLUMN resolution    TYPE JSON USING resolution::json;
ALTER TABLE measurements   ALTER COLUMN detail        TYPE JSON USING detail::json;
ALTER TABLE run_extras     ALTER COLUMN body          TYPE JSON USING body::json;
