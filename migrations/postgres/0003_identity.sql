-- Face identity for the gateway's tenants (duplicates and blocklists): the embedding of each
-- verification's face (never the image), and each tenant's blocklist. Kept only for tenants
-- that turn `duplicates` or `blocklist` on.
CREATE TABLE IF NOT EXISTS verification_faces (
    -- Incremental refresh of a gateway's in-memory index: rows after the last seq it read.
    seq             BIGSERIAL PRIMARY KEY,
    verification_id UUID NOT NULL UNIQUE,
    tenant_id       TEXT NOT NULL,
    -- Unit-length embedding, little-endian f32s (128 of them for dlib's ResNet).
    embedding       BYTEA NOT NULL,
    -- The verification's final decision was `approved`: only those count as duplicates.
    approved        BOOLEAN NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS verification_faces_tenant_idx ON verification_faces (tenant_id, seq);

CREATE TABLE IF NOT EXISTS blocklist_faces (
    tenant_id       TEXT NOT NULL,
    verification_id UUID NOT NULL,
    embedding       BYTEA NOT NULL,
    reason          TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, verification_id)
);
