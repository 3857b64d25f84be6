-- Charter PostgreSQL schema, version 5: the notification outbox.
--
-- One row per (approval or escalation, notification target), written when the item is
-- created and delivered by the server's notifier with retries. `next_attempt_at` doubles
-- as a lease: a claimed row's next attempt is pushed into the future so that only one
-- delivery of it is in flight.
CREATE TABLE notifications (
    id              UUID PRIMARY KEY,
    kind            TEXT NOT NULL,            -- approval | escalation
    item_id         UUID NOT NULL,            -- the approval's or escalation's id
    charter         TEXT NOT NULL,
    target          TEXT NOT NULL,            -- `connector` or `connector:where`
    state           TEXT NOT NULL,            -- pending | sent | failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    last_error      TEXT
);

CREATE UNIQUE INDEX notifications_item_target ON notifications (item_id, target);
CREATE INDEX notifications_due ON notifications (state, next_attempt_at);
