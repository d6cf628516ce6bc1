-- Artifacts: the output tars of `tools.docker.run` (one per run with `outputs`), which
-- later activities take as inputs (`{"path": ..., "artifact": id}`). The bytes live on
-- the worker's artifact directory (`storage_path` is relative to it); this row is the
-- index, and an artifact is only readable by its own tenant.
CREATE TABLE highway.artifacts (
    id           uuid PRIMARY KEY,
    tenant_id    text NOT NULL,
    -- The activity attempt that produced it (NULL for artifacts imported by an operator).
    activity_id  uuid,
    attempt      integer,
    kind         text NOT NULL DEFAULT 'outputs' CHECK (kind IN ('outputs', 'import')),
    size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
    -- Hex SHA-256 of the stored tar, checked again when the artifact is read.
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    entry_count  bigint NOT NULL CHECK (entry_count >= 0),
    storage_path text NOT NULL,
    -- The declared output paths that were found (absolute container paths).
    paths        text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz
);
-- `activities show`: the artifacts of an activity.
CREATE INDEX artifacts_activity_idx ON highway.artifacts (activity_id) WHERE activity_id IS NOT NULL;
-- Tenant listings and the expiry sweep.
CREATE INDEX artifacts_tenant_created_idx ON highway.artifacts (tenant_id, created_at DESC);
CREATE INDEX artifacts_expires_idx ON highway.artifacts (expires_at) WHERE expires_at IS NOT NULL;
