-- Charter PostgreSQL schema, version 11: web UI sessions in the store, shared by every
-- node, so a balancer needs no sticky sessions and a restart does not log anyone out.
-- The cookie's id is stored only as its SHA-256.
CREATE TABLE ui_sessions (
    id_hash    TEXT PRIMARY KEY,        -- SHA-256 of the session id, hex
    name       TEXT NOT NULL,           -- the API token's name (`local` when open)
    role       TEXT NOT NULL,           -- viewer, reviewer, admin
    charters   JSONB NOT NULL,          -- array of charter names; [] = all
    csrf       TEXT NOT NULL,           -- the session's CSRF token
    grant_hash TEXT NOT NULL,           -- fingerprint of the token it was opened with
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
