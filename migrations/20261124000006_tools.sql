-- The other `tools.docker.*` kinds (issue 6): images we create by `tools.docker.commit`,
-- and the tenant secrets store.

-- One row per image made by `tools.docker.commit`. An image is addressed by tenants only
-- through this table (an image of another tenant behaves like a missing one), and the
-- garbage collector removes expired, unpinned images (`docker::tools::reap_expired_images`).
CREATE TABLE highway.docker_images (
    image_id            text PRIMARY KEY CHECK (image_id ~ '^sha256:[0-9a-f]{64}$'),
    tenant_id           text NOT NULL,
    -- `repository:tag` as committed (always under the tenant's namespace).
    reference           text NOT NULL,
    source_container_id text,
    activity_id         uuid,
    workflow_run_id     uuid,
    daemon_id           text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    pinned              boolean NOT NULL DEFAULT false,
    -- NULL = no TTL (only meaningful for pinned images).
    expires_at          timestamptz,
    removed_at          timestamptz,
    removed_by          text,
    removed_reason      text
);
-- Tenant listings, and the lookup by reference.
CREATE INDEX docker_images_tenant_idx ON highway.docker_images (tenant_id, created_at DESC);
CREATE INDEX docker_images_reference_idx ON highway.docker_images (reference)
    WHERE removed_at IS NULL;
-- The GC's sweep of expired unpinned images.
CREATE INDEX docker_images_expiry_idx ON highway.docker_images (daemon_id, expires_at)
    WHERE removed_at IS NULL AND NOT pinned;

-- Tenant secrets, encrypted at rest (ChaCha20-Poly1305) with the worker's
-- `HIGHWAY_SECRETS_KEY`; the tenant and name are the associated data, so a ciphertext
-- moved to another row does not decrypt. Plain values never reach this table.
CREATE TABLE highway.secrets (
    tenant_id  text NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 128),
    name       text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,128}$'),
    nonce      bytea NOT NULL CHECK (length(nonce) = 12),
    ciphertext bytea NOT NULL,
    -- First 8 hex digits of SHA-256(key): tells which key encrypted the row (rotation).
    key_id     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
