-- Charter PostgreSQL schema, version 7: the decision layer's store-backed state.

-- Exact-match LLM response cache shared by every node: validated answers by the SHA-256 of
-- (provider, model, request body). Expired rows are ignored and swept on write.
CREATE TABLE llm_cache (
    key        TEXT PRIMARY KEY,          -- hex SHA-256 of the request
    value      TEXT NOT NULL,             -- the model's answer text
    created_at BIGINT NOT NULL,           -- Unix milliseconds
    expires_at BIGINT NOT NULL
);
CREATE INDEX llm_cache_expiry ON llm_cache (expires_at);

-- What a run produced besides its decision and actions: drafts written for actions
-- (kind `draft`) and records fetched before deciding (kind `context`), one per name.
CREATE TABLE run_extras (
    run_id   UUID NOT NULL REFERENCES runs (id),
    event_id UUID NOT NULL,
    kind     TEXT NOT NULL,               -- draft | context
    name     TEXT NOT NULL,               -- the action (draft) or the context name
    body     JSONB NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (run_id, kind, name)
);
CREATE INDEX run_extras_event ON run_extras (event_id, kind, name, at);
