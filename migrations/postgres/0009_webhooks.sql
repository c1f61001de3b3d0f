-- Webhooks: a durable outbox, written in the transaction that commits what the event tells
-- (a verification, a review's resolution), so nothing is sent for an uncommitted row and
-- nothing is lost when an instance dies before sending. Each instance's sender claims due
-- messages, delivers them signed (Standard Webhooks) and logs every attempt.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    -- The Standard Webhooks message id (`webhook-id`): the same on every retry.
    id              UUID PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    -- The endpoint's URL as configured (its secret stays in the config).
    url             TEXT NOT NULL,
    event           TEXT NOT NULL,
    verification_id UUID,
    -- The JSON body sent: {"type", "timestamp", "data"}.
    payload         TEXT NOT NULL,
    -- pending | delivered | failed
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    -- A sender working on it; past this, another may take it over.
    locked_until    TIMESTAMPTZ,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due_idx
    ON webhook_outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhook_outbox_tenant_idx ON webhook_outbox (tenant_id, id);
CREATE INDEX IF NOT EXISTS webhook_outbox_verification_idx ON webhook_outbox (verification_id);

-- Every delivery attempt.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id          BIGSERIAL PRIMARY KEY,
    message_id  UUID NOT NULL,
    attempt     INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    duration_ms BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_message_idx ON webhook_deliveries (message_id, id);
