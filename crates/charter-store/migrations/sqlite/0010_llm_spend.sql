-- Charter SQLite schema, version 10: what each charter spent on LLM calls per UTC day, so a
-- stage's `budget:` holds across restarts and for every node of the store (before, each
-- process counted on its own). One row per charter and day; adds are atomic upserts.
CREATE TABLE llm_spend (
    charter TEXT NOT NULL,
    day     INTEGER NOT NULL,            -- UTC days since 1970-01-01
    tokens  INTEGER NOT NULL DEFAULT 0,  -- prompt + completion tokens
    cost    REAL NOT NULL DEFAULT 0,     -- in the providers' price unit
    PRIMARY KEY (charter, day)
) WITHOUT ROWID;

-- Each charter's LLM rate-limit window: when it started and how many requests it admitted,
-- so `rate_limit` holds for every node. One row per charter, reset when its window ends.
CREATE TABLE llm_rate (
    charter      TEXT PRIMARY KEY,
    window_start INTEGER NOT NULL,       -- Unix ms of the window's first request
    taken        INTEGER NOT NULL        -- requests admitted in it
) WITHOUT ROWID;
