-- Credits, reservations and idempotency (SQLite); same shape as the Postgres schema.
CREATE TABLE IF NOT EXISTS tenants (
    id         TEXT PRIMARY KEY,
    balance    INTEGER NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS credit_ledger (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    reservation_id  TEXT,
    kind            TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    verification_id TEXT,
    reason          TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS credit_ledger_tenant_idx ON credit_ledger (tenant_id, id);
CREATE INDEX IF NOT EXISTS credit_ledger_reservation_idx ON credit_ledger (reservation_id);

CREATE TABLE IF NOT EXISTS credit_reservations (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    amount     INTEGER NOT NULL,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS credit_reservations_expiry_idx ON credit_reservations (expires_at);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id       TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    state           TEXT NOT NULL,
    locked_until    TEXT NOT NULL,
    verification_id TEXT,
    http_status     INTEGER,
    response        TEXT,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry_idx ON idempotency_keys (expires_at);
