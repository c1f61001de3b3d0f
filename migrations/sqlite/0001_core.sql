-- Core tables of livegate (SQLite). Same shape as the Postgres schema: UUIDs and timestamps
-- as text (RFC 3339, UTC), JSON as text, booleans as 0/1.
CREATE TABLE IF NOT EXISTS verifications (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    request_id          TEXT NOT NULL,
    provider            TEXT,
    provider_request_id TEXT,
    decision            TEXT CHECK (decision IN ('approved', 'declined', 'review')),
    is_live             INTEGER NOT NULL DEFAULT 0,
    score               REAL,
    threshold           REAL NOT NULL,
    spoof_type          TEXT,
    warnings            TEXT NOT NULL DEFAULT '[]',
    face                TEXT,
    faces_detected      INTEGER,
    image_sha256        TEXT,
    image_format        TEXT,
    image_width         INTEGER,
    image_height        INTEGER,
    external_id         TEXT,
    metadata            TEXT,
    http_status         INTEGER NOT NULL,
    error_code          TEXT,
    error_detail        TEXT,
    latency_ms          INTEGER NOT NULL,
    config_hash         TEXT,
    trace_id            TEXT,
    created_at          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS verifications_tenant_id_idx ON verifications (tenant_id, id DESC);
CREATE INDEX IF NOT EXISTS verifications_tenant_created_idx ON verifications (tenant_id, created_at DESC);

CREATE TABLE IF NOT EXISTS verification_attempts (
    verification_id TEXT NOT NULL REFERENCES verifications (id) ON DELETE CASCADE,
    attempt_no      INTEGER NOT NULL,
    provider        TEXT NOT NULL,
    provider_kind   TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    shadow          INTEGER NOT NULL DEFAULT 0,
    score           REAL,
    error_code      TEXT,
    upstream_status INTEGER,
    latency_ms      INTEGER NOT NULL,
    raw_body        TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (verification_id, attempt_no)
);

CREATE TABLE IF NOT EXISTS settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
