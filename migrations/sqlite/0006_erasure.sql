-- Retention and erasure (SQLite): same shape as the Postgres schema.
ALTER TABLE verifications ADD COLUMN erased_at TEXT;

CREATE TABLE IF NOT EXISTS erasures (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    scope           TEXT NOT NULL CHECK (scope IN ('verification', 'subject')),
    verification_id TEXT,
    requested_by    TEXT NOT NULL CHECK (requested_by IN ('tenant', 'admin')),
    verifications   INTEGER NOT NULL,
    faces           INTEGER NOT NULL,
    blocklist       INTEGER NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS erasures_tenant_idx ON erasures (tenant_id, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS erasures_verification_idx
    ON erasures (tenant_id, verification_id) WHERE verification_id IS NOT NULL;

CREATE INDEX IF NOT EXISTS verifications_tenant_external_idx
    ON verifications (tenant_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS verification_attempts_created_idx
    ON verification_attempts (created_at) WHERE raw_body IS NOT NULL;
CREATE INDEX IF NOT EXISTS verification_faces_tenant_created_idx
    ON verification_faces (tenant_id, created_at);
