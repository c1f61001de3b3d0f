-- Credits, reservations and idempotency (Postgres). The balance is what a tenant can still
-- spend: reservations are already taken out of it, and every movement is a ledger row, so
-- balance = sum(credit_ledger.amount) per tenant at every commit.
CREATE TABLE IF NOT EXISTS tenants (
    id         TEXT PRIMARY KEY,
    balance    BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS credit_ledger (
    id              BIGSERIAL PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    reservation_id  UUID,
    -- initial | reserve | release | charge | expire | topup | adjust
    kind            TEXT NOT NULL,
    -- Signed effect on the balance.
    amount          BIGINT NOT NULL,
    verification_id UUID,
    reason          TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS credit_ledger_tenant_idx ON credit_ledger (tenant_id, id);
CREATE INDEX IF NOT EXISTS credit_ledger_reservation_idx ON credit_ledger (reservation_id);

-- Open reservations; a row is deleted when it is settled or expires (a crashed instance's
-- reservations are released by any other instance's sweeper).
CREATE TABLE IF NOT EXISTS credit_reservations (
    id         UUID PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    amount     BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS credit_reservations_expiry_idx ON credit_reservations (expires_at);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id       TEXT NOT NULL,
    key             TEXT NOT NULL,
    -- SHA-256 of the request's meaning (image hash and options), not of its multipart framing.
    request_hash    TEXT NOT NULL,
    -- running | done
    state           TEXT NOT NULL,
    -- A running claim older than this belongs to a crashed instance and may be taken over.
    locked_until    TIMESTAMPTZ NOT NULL,
    verification_id UUID,
    http_status     INTEGER,
    response        TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry_idx ON idempotency_keys (expires_at);
