-- Charter PostgreSQL schema, version 4: state of event sources beyond webhooks.

-- Where a source left off: a polled API's cursor (`since` value, page token) or a
-- schedule's last fire time. Written only after the events it covers are committed, so a
-- crash re-reads an overlap that the events' dedupe keys absorb.
CREATE TABLE source_state (
    charter    TEXT NOT NULL,
    source     TEXT NOT NULL,      -- `poll` or `schedule`
    cursor     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,    -- Unix milliseconds
    PRIMARY KEY (charter, source)
);
