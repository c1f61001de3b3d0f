-- Core tables of livegate (Postgres). Images are never stored; their SHA-256 always is.
CREATE TABLE IF NOT EXISTS verifications (
    id                  UUID PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    request_id          TEXT NOT NULL,
    provider            TEXT,
    provider_request_id TEXT,
    decision            TEXT CHECK (decision IN ('approved', 'declined', 'review')),
    is_live             BOOLEAN NOT NULL DEFAULT FALSE,
    score               DOUBLE PRECISION,
    threshold           DOUBLE PRECISION NOT NULL,
    spoof_type          TEXT,
    warnings            JSONB NOT NULL DEFAULT '[]'::jsonb,
    face                JSONB,
    faces_detected      INTEGER,
    image_sha256        TEXT,
    image_format        TEXT,
    image_width         INTEGER,
    image_height        INTEGER,
    external_id         TEXT,
    metadata            JSONB,
    http_status         INTEGER NOT NULL,
    error_code          TEXT,
    error_detail        TEXT,
    latency_ms          BIGINT NOT NULL,
    config_hash         TEXT,
    trace_id            TEXT,
    created_at          TIMESTAMPTZ NOT NULL
);
-- Newest-first pagination per tenant (ids are UUIDv7, ordered by time).
CREATE INDEX IF NOT EXISTS verifications_tenant_id_idx ON verifications (tenant_id, id DESC);
CREATE INDEX IF NOT EXISTS verifications_tenant_created_idx ON verifications (tenant_id, created_at DESC);

CREATE TABLE IF NOT EXISTS verification_attempts (
    verification_id UUID NOT NULL REFERENCES verifications (id) ON DELETE CASCADE,
    attempt_no      INTEGER NOT NULL,
    provider        TEXT NOT NULL,
    provider_kind   TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    shadow          BOOLEAN NOT NULL DEFAULT FALSE,
    score           DOUBLE PRECISION,
    error_code      TEXT,
    upstream_status INTEGER,
    latency_ms      BIGINT NOT NULL,
    raw_body        TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (verification_id, attempt_no)
);

-- Small key/value facts livegate keeps about itself (e.g. the demo tenant's key hash).
CREATE TABLE IF NOT EXISTS settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
