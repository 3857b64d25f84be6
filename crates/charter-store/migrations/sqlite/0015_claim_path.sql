-- The PostgreSQL claim path's slot table and partial indexes (issue #29) are for several
-- nodes sharing one database. SQLite is served by one process whose claims are serialised
-- by its single writer, so nothing changes here (the migration exists so that both backends
-- report the same schema version).
SELECT 1;
