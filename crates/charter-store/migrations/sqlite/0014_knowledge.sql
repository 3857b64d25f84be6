-- Charter SQLite schema: approved knowledge (issue 26). Documents of the project's
-- knowledge sources, their passages indexed with FTS5 (porter stemming over unicode61
-- words, the heading weighted above the text), and the knowledge gaps runs record.
CREATE TABLE knowledge_documents (
    source       TEXT NOT NULL,
    doc_key      TEXT NOT NULL,          -- path in a folder, id in an API
    title        TEXT NOT NULL,
    url          TEXT,
    owner        TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,       -- when the document last changed
    content_hash TEXT NOT NULL,          -- what was indexed; the same hash is not re-indexed
    indexed_at   INTEGER NOT NULL,
    PRIMARY KEY (source, doc_key)
);
CREATE TABLE knowledge_passages (
    id      INTEGER PRIMARY KEY,         -- the FTS5 rowid
    source  TEXT NOT NULL,
    doc_key TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    heading TEXT NOT NULL,
    body    TEXT NOT NULL,
    FOREIGN KEY (source, doc_key) REFERENCES knowledge_documents (source, doc_key)
        ON DELETE CASCADE
);
CREATE INDEX knowledge_passages_doc ON knowledge_passages (source, doc_key);
-- External-content FTS5 table over knowledge_passages, kept in step by the triggers below.
CREATE VIRTUAL TABLE knowledge_fts USING fts5(
    heading, body,
    content = 'knowledge_passages', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER knowledge_passages_ai AFTER INSERT ON knowledge_passages BEGIN
    INSERT INTO knowledge_fts (rowid, heading, body) VALUES (new.id, new.heading, new.body);
END;
CREATE TRIGGER knowledge_passages_ad AFTER DELETE ON knowledge_passages BEGIN
    INSERT INTO knowledge_fts (knowledge_fts, rowid, heading, body)
        VALUES ('delete', old.id, old.heading, old.body);
END;
CREATE TABLE knowledge_gaps (
    id         TEXT PRIMARY KEY,         -- UUIDv7
    charter    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    context    TEXT NOT NULL,            -- the retrieve step's name
    question   TEXT NOT NULL,
    reason     TEXT NOT NULL CHECK (reason IN ('nothing_found', 'stale', 'draft_refused')),
    why        TEXT NOT NULL,
    sources    TEXT NOT NULL,            -- JSON array of source names
    found      TEXT NOT NULL,            -- JSON array of what was found
    created_at INTEGER NOT NULL
);
CREATE INDEX knowledge_gaps_time ON knowledge_gaps (created_at);
CREATE INDEX knowledge_gaps_charter ON knowledge_gaps (charter, created_at);
