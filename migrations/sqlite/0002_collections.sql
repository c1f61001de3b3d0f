-- The built-in engine's collections server (SQLite). Same shape as the Postgres schema:
-- UUIDs and timestamps as text (RFC 3339, UTC), JSON as text, the embedding as a BLOB.
CREATE TABLE IF NOT EXISTS collections (
    id         TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS collection_keys (
    key_sha256    TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    mode          TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS collection_keys_collection_idx ON collection_keys (collection_id);

CREATE TABLE IF NOT EXISTS faces (
    -- UUIDv7 as lower-case hyphenated text: text order is time order.
    id              TEXT PRIMARY KEY,
    collection_id   TEXT NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    external_id     TEXT,
    metadata        TEXT,
    liveness_score  REAL,
    bbox_x1         REAL NOT NULL,
    bbox_y1         REAL NOT NULL,
    bbox_x2         REAL NOT NULL,
    bbox_y2         REAL NOT NULL,
    confidence      REAL NOT NULL,
    quality         REAL,
    image_sha256    TEXT NOT NULL,
    -- Reserved for identification (face embeddings, a later issue): little-endian f32s.
    embedding       BLOB,
    created_at      TEXT NOT NULL,
    UNIQUE (collection_id, external_id)
);
CREATE INDEX IF NOT EXISTS faces_collection_idx ON faces (collection_id, id);
