-- The built-in engine's collections server (`livegate engine serve`): collections, the API
-- keys bound to them (only their SHA-256 is stored) and enrolled faces (only the image's
-- SHA-256 is stored, never the image).
CREATE TABLE IF NOT EXISTS collections (
    id         TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS collection_keys (
    key_sha256    TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    mode          TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS collection_keys_collection_idx ON collection_keys (collection_id);

CREATE TABLE IF NOT EXISTS faces (
    -- UUIDv7: time-ordered, so id order is enrollment order (keyset pagination).
    id              UUID PRIMARY KEY,
    collection_id   TEXT NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    external_id     TEXT,
    metadata        JSONB,
    liveness_score  DOUBLE PRECISION,
    bbox_x1         DOUBLE PRECISION NOT NULL,
    bbox_y1         DOUBLE PRECISION NOT NULL,
    bbox_x2         DOUBLE PRECISION NOT NULL,
    bbox_y2         DOUBLE PRECISION NOT NULL,
    confidence      DOUBLE PRECISION NOT NULL,
    quality         DOUBLE PRECISION,
    image_sha256    TEXT NOT NULL,
    -- Reserved for identification (face embeddings, a later issue): little-endian f32s.
    -- NULL until an embedding model fills it.
    embedding       BYTEA,
    created_at      TIMESTAMPTZ NOT NULL,
    -- NULLs are distinct, so faces without an external_id never conflict.
    UNIQUE (collection_id, external_id)
);
CREATE INDEX IF NOT EXISTS faces_collection_idx ON faces (collection_id, id);
