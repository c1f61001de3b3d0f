-- Retention and erasure (Postgres). An erased verification stays as a tombstone: its
-- decision, score, status, timing and ledger rows are kept so counts and balances stay
-- right; every column that could hold personal data is emptied and `erased_at` set.
ALTER TABLE verifications ADD COLUMN IF NOT EXISTS erased_at TIMESTAMPTZ;

-- One row per erasure request: what was asked, by whom, how much it removed. Nothing in it
-- identifies a person: the subject's external id is never written here.
CREATE TABLE IF NOT EXISTS erasures (
    id              UUID PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    -- verification | subject
    scope           TEXT NOT NULL CHECK (scope IN ('verification', 'subject')),
    -- The erased verification, for scope `verification` (a tombstone's id).
    verification_id UUID,
    -- tenant | admin
    requested_by    TEXT NOT NULL CHECK (requested_by IN ('tenant', 'admin')),
    verifications   BIGINT NOT NULL,
    faces           BIGINT NOT NULL,
    blocklist       BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS erasures_tenant_idx ON erasures (tenant_id, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS erasures_verification_idx
    ON erasures (tenant_id, verification_id) WHERE verification_id IS NOT NULL;

-- Erasure by subject, and the purge job's scans by age.
CREATE INDEX IF NOT EXISTS verifications_tenant_external_idx
    ON verifications (tenant_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS verification_attempts_created_idx
    ON verification_attempts (created_at) WHERE raw_body IS NOT NULL;
CREATE INDEX IF NOT EXISTS verification_faces_tenant_created_idx
    ON verification_faces (tenant_id, created_at);
