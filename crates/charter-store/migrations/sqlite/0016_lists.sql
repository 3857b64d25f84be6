-- Paged listings and search (see src/page.rs): each list's filter and order is one index
-- seek, whatever the page's depth and the store's size. No new index on the events'
-- status: it would cost every claim and release a write; events_claim serves a charter's.
-- Search by dedupe key across charters (the unique index leads with the charter).
CREATE INDEX events_dedupe_key ON events (dedupe_key) WHERE dedupe_key IS NOT NULL;
-- The inbox's queues in order: pending approvals, open escalations, oldest first.
CREATE INDEX approvals_page ON approvals (status, created_at, id);
CREATE INDEX escalations_page ON escalations (status, created_at, id);
-- The audit page's filter by actor.
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
