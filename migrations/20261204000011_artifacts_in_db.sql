-- Artifacts in Postgres: output tars are stored as chunks in the database by
-- default, so a step on any host can take the outputs of a step that ran on another.
-- The filesystem store stays available as an explicit option; `storage` says where an
-- artifact's bytes are. Only `worker/src/docker/artifacts` writes these tables.
ALTER TABLE highway.artifacts
    ADD COLUMN storage     text NOT NULL DEFAULT 'fs' CHECK (storage IN ('fs', 'postgres')),
    -- `writing` while its chunks are stored (readers refuse it; retention deletes one
    -- left behind by a crash), `complete` once the last chunk and the checksum are in.
    ADD COLUMN state       text NOT NULL DEFAULT 'complete' CHECK (state IN ('writing', 'complete')),
    ADD COLUMN chunk_count integer CHECK (chunk_count >= 0),
    -- Last write of a chunk: an artifact `writing` and untouched for the grace is abandoned.
    ADD COLUMN touched_at  timestamptz NOT NULL DEFAULT now(),
    ALTER COLUMN storage_path DROP NOT NULL,
    ALTER COLUMN sha256 DROP NOT NULL,
    ADD CONSTRAINT artifacts_complete_check CHECK (
        state = 'writing'
        OR (sha256 IS NOT NULL AND (storage = 'fs') = (storage_path IS NOT NULL)
            AND (storage = 'postgres') = (chunk_count IS NOT NULL)));
-- The retention sweep of abandoned writes.
CREATE INDEX artifacts_writing_idx ON highway.artifacts (touched_at) WHERE state = 'writing';

-- The bytes of a Postgres-stored artifact: its tar cut in 1 MiB pieces, in order (`seq`
-- from 0). Deleting the artifact deletes its chunks.
CREATE TABLE highway.artifact_chunks (
    artifact_id uuid NOT NULL REFERENCES highway.artifacts (id) ON DELETE CASCADE,
    seq         integer NOT NULL CHECK (seq >= 0),
    data        bytea NOT NULL,
    PRIMARY KEY (artifact_id, seq)
);
-- Output tars mostly hold compressed data (binaries, archives, images): TOAST compression
-- would burn CPU on every write for nothing. EXTERNAL keeps them out of line, uncompressed
-- (and makes `octet_length(data)` cheap: it reads the TOAST pointer, not the value).
ALTER TABLE highway.artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
