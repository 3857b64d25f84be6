-- Charter PostgreSQL schema: approved knowledge (issue 26). Documents of the project's
-- knowledge sources, their passages with a stored English `tsvector` (heading weighted A,
-- text B) under a GIN index, and the knowledge gaps runs record.
CREATE TABLE knowledge_documents (
    source       TEXT NOT NULL,
    doc_key      TEXT NOT NULL,
    title        TEXT NOT NULL,
    url          TEXT,
    owner        TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    content_hash TEXT NOT NULL,
    indexed_at   BIGINT NOT NULL,
    PRIMARY KEY (source, doc_key)
);
CREATE TABLE knowledge_passages (
    id      BIGSERIAL PRIMARY KEY,
    source  TEXT NOT NULL,
    doc_key TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    heading TEXT NOT NULL,
    body    TEXT NOT NULL,
    tsv     tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', heading), 'A') ||
        setweight(to_tsvector('english', body), 'B')
    ) STORED,
    FOREIGN KEY (source, doc_key) REFERENCES knowledge_documents (source, doc_key)
        ON DELETE CASCADE
);
CREATE INDEX knowledge_passages_doc ON knowledge_passages (source, doc_key);
CREATE INDEX knowledge_passages_tsv ON knowledge_passages USING GIN (tsv);
CREATE TABLE knowledge_gaps (
    id         UUID PRIMARY KEY,
    charter    TEXT NOT NULL,
    event_id   UUID NOT NULL,
    run_id     UUID NOT NULL,
    context    TEXT NOT NULL,
    question   TEXT NOT NULL,
    reason     TEXT NOT NULL CHECK (reason IN ('nothing_found', 'stale', 'draft_refused')),
    why        TEXT NOT NULL,
    sources    JSONB NOT NULL,
    found      JSONB NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX knowledge_gaps_time ON knowledge_gaps (created_at);
CREATE INDEX knowledge_gaps_charter ON knowledge_gaps (charter, created_at);
