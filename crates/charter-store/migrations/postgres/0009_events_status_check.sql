-- SQLite rebuilds its events table here to turn the status CHECK's IN list into a chain of
-- comparisons (SQLite evaluated the list through a temporary b-tree on every write).
-- PostgreSQL evaluates `status IN (...)` as an array comparison: nothing to change. (The
-- migration exists so that both backends report the same schema version.)
SELECT 1;
