-- The operators' surface: API tokens (stored hashed) and read-only views over the
-- container tracking table for people who prefer SQL to the CLI.

-- One row per bearer token. Only the SHA-256 of the token is stored, so a leaked
-- database (or backup) does not leak usable credentials; the token itself is printed
-- once by `highway tokens create` and never again.
CREATE TABLE highway.api_tokens (
    id           uuid PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    -- NULL = an admin token (sees every tenant); otherwise the one tenant it acts for.
    tenant_id    text CHECK (tenant_id IS NULL OR length(tenant_id) BETWEEN 1 AND 64),
    -- Hex SHA-256 of the whole token string.
    token_sha256 text NOT NULL CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    -- Updated at most once a minute per token (a write per request would be wasteful).
    last_used_at timestamptz,
    CONSTRAINT api_tokens_sha256_uniq UNIQUE (token_sha256)
);

-- Containers that may still exist on a daemon: created or running.
CREATE VIEW highway.containers_running AS
SELECT c.container_id, c.short_id, c.name, c.tenant_id, c.activity_id, c.workflow_run_id,
       c.attempt, c.image, c.status, c.daemon_id, c.worker_id, c.created_at, c.started_at,
       now() - COALESCE(c.started_at, c.created_at) AS age
  FROM highway.docker_containers c
 WHERE c.status IN ('created', 'running');
COMMENT ON VIEW highway.containers_running IS
    'Containers that may still exist on a daemon (created or running), with their age.';

-- Orphans: containers we manage that are not removed yet while the activity that owns
-- them is terminal, missing altogether, or already on a later attempt. Detached
-- containers are orphans only once their detach TTL passed, and kept containers only
-- once their retention passed. The garbage collector removes these (after its grace).
CREATE VIEW highway.containers_orphaned AS
SELECT c.container_id, c.short_id, c.name, c.tenant_id, c.activity_id, c.workflow_run_id,
       c.attempt, c.image, c.status, c.daemon_id, c.worker_id, c.created_at,
       a.status AS activity_status, a.attempt AS activity_attempt,
       CASE WHEN a.id IS NULL THEN 'activity_missing'
            WHEN a.status NOT IN ('scheduled', 'running') THEN 'activity_terminal'
            ELSE 'older_attempt' END AS orphan_reason
  FROM highway.docker_containers c
  LEFT JOIN highway.activities a ON a.id = c.activity_id
 WHERE c.status IN ('created', 'running', 'exited')
   AND (c.gc_protected_until IS NULL OR c.gc_protected_until < now())
   AND (NOT c.detached OR c.detach_expires_at IS NULL OR c.detach_expires_at < now())
   AND (a.id IS NULL
        OR a.status NOT IN ('scheduled', 'running')
        OR (c.attempt IS NOT NULL AND c.attempt < a.attempt));
COMMENT ON VIEW highway.containers_orphaned IS
    'Managed containers not removed yet whose activity is terminal, missing, or on a later attempt (what the GC reaps).';

-- Per-tenant usage: live containers now, and containers created in the last 24 hours.
CREATE VIEW highway.tenant_container_usage AS
SELECT c.tenant_id,
       count(*) FILTER (WHERE c.status IN ('created', 'running'))               AS live,
       count(*) FILTER (WHERE c.status = 'running')                             AS running,
       count(*) FILTER (WHERE c.created_at > now() - interval '24 hours')       AS created_24h,
       count(*) FILTER (WHERE c.oom_killed)                                     AS oom_killed_total,
       max(c.created_at)                                                        AS last_created_at
  FROM highway.docker_containers c
 GROUP BY c.tenant_id;
COMMENT ON VIEW highway.tenant_container_usage IS
    'Per-tenant container counts: live, running, created in the last 24h, OOM-killed.';

-- Long runners: running containers ordered by how long they have been running.
CREATE VIEW highway.containers_long_running AS
SELECT c.container_id, c.short_id, c.name, c.tenant_id, c.activity_id, c.attempt, c.image,
       c.started_at, now() - c.started_at AS running_for, c.detached, c.worker_id
  FROM highway.docker_containers c
 WHERE c.status = 'running' AND c.started_at IS NOT NULL
 ORDER BY c.started_at;
COMMENT ON VIEW highway.containers_long_running IS
    'Running containers, longest running first (filter with running_for > interval ''1 hour'').';
