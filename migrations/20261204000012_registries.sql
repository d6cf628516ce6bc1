-- Private registry credentials, per tenant or global (tenant_id NULL), encrypted at rest
-- like `highway.secrets`: the password is ChaCha20-Poly1305 under HIGHWAY_SECRETS_KEY,
-- bound to the row (scope, host, username) as associated data. Written only by
-- `worker/src/docker/registry_store.rs`.
CREATE TABLE highway.registry_credentials (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL: every tenant's pulls (a tenant's own row for the same host wins).
    tenant_id  text CHECK (length(tenant_id) BETWEEN 1 AND 128),
    -- Normalised as docker does: `https://index.docker.io/v1/` for Docker Hub,
    -- `host[:port]` otherwise.
    host       text NOT NULL CHECK (length(host) BETWEEN 1 AND 255),
    username   text NOT NULL CHECK (length(username) BETWEEN 1 AND 255),
    nonce      bytea NOT NULL CHECK (length(nonce) = 12),
    ciphertext bytea NOT NULL,
    -- First 8 hex digits of SHA-256(key): which key encrypted the row (rotation).
    key_id     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX registry_credentials_global_host ON highway.registry_credentials (host)
    WHERE tenant_id IS NULL;
CREATE UNIQUE INDEX registry_credentials_tenant_host ON highway.registry_credentials (tenant_id, host)
    WHERE tenant_id IS NOT NULL;
