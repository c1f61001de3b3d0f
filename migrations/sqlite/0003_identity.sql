-- Face identity for the gateway's tenants (SQLite): same shape as the Postgres schema.
CREATE TABLE IF NOT EXISTS verification_faces (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    verification_id TEXT NOT NULL UNIQUE,
    tenant_id       TEXT NOT NULL,
    embedding       BLOB NOT NULL,
    approved        INTEGER NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS verification_faces_tenant_idx ON verification_faces (tenant_id, seq);

CREATE TABLE IF NOT EXISTS blocklist_faces (
    tenant_id       TEXT NOT NULL,
    verification_id TEXT NOT NULL,
    embedding       BLOB NOT NULL,
    reason          TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, verification_id)
);
