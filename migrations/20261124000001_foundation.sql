-- The foundation: workflow runs, the activity queue, workers, the container tracking
-- table and the audit log. Every timestamp that judges a lease, a retry or a timeout is
-- written with the database's now(), never a worker's clock.

CREATE SCHEMA IF NOT EXISTS highway;

CREATE TABLE highway.workflow_runs (
    id                  uuid PRIMARY KEY,
    tenant_id           text NOT NULL,
    name                text NOT NULL,
    status              text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'failed', 'cancelling', 'cancelled')),
    input               jsonb NOT NULL DEFAULT '{}'::jsonb,
    definition          jsonb,
    result              jsonb,
    error               jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    cancel_requested_at timestamptz
);
-- `highway runs ls --tenant T`: newest runs of a tenant.
CREATE INDEX workflow_runs_tenant_created_idx ON highway.workflow_runs (tenant_id, created_at DESC);

CREATE TABLE highway.activities (
    id                          uuid PRIMARY KEY,
    workflow_run_id             uuid REFERENCES highway.workflow_runs (id) ON DELETE CASCADE,
    tenant_id                   text NOT NULL,
    kind                        text NOT NULL,
    -- Secrets appear here only as references ({"secret": "name"}), never as values.
    params                      jsonb NOT NULL DEFAULT '{}'::jsonb,
    queue                       text NOT NULL DEFAULT 'default',
    -- Lower numbers are claimed first (1 = most urgent), as in River.
    priority                    smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 9),
    status                      text NOT NULL DEFAULT 'scheduled'
        CHECK (status IN ('scheduled', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    -- Number of the current (or last) attempt; 0 while never started.
    attempt                     integer NOT NULL DEFAULT 0,
    max_attempts                integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    -- Attempts that do not count against max_attempts: released at shutdown, or lost
    -- to infrastructure (Docker vanished mid-run), which have a budget of their own.
    uncounted_attempts          integer NOT NULL DEFAULT 0,
    retry_initial_interval_ms   bigint NOT NULL DEFAULT 1000 CHECK (retry_initial_interval_ms >= 0),
    retry_backoff_coefficient   double precision NOT NULL DEFAULT 2.0 CHECK (retry_backoff_coefficient >= 1.0),
    retry_max_interval_ms       bigint NOT NULL DEFAULT 100000 CHECK (retry_max_interval_ms >= 0),
    non_retryable_error_types   text[] NOT NULL DEFAULT '{}',
    run_at                      timestamptz NOT NULL DEFAULT now(),
    schedule_to_start_timeout_ms bigint CHECK (schedule_to_start_timeout_ms > 0),
    start_to_close_timeout_ms   bigint CHECK (start_to_close_timeout_ms > 0),
    schedule_to_close_timeout_ms bigint CHECK (schedule_to_close_timeout_ms > 0),
    heartbeat_timeout_ms        bigint CHECK (heartbeat_timeout_ms > 0),
    lease_owner                 uuid,
    lease_expires_at            timestamptz,
    heartbeat_at                timestamptz,
    heartbeat_details           jsonb,
    result                      jsonb,
    error                       jsonb,
    idempotency_key             text,
    -- sha256 of the canonical enqueue request: same key + other body is refused.
    request_hash                text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    started_at                  timestamptz,
    finished_at                 timestamptz,
    cancel_requested_at         timestamptz,
    CONSTRAINT activities_lease_when_running CHECK (status <> 'running' OR lease_owner IS NOT NULL)
);

-- Idempotent enqueue: one activity per (tenant, key). Partial: most activities carry no
-- key, and every (non-HOT) update of a row would otherwise write an entry here too.
CREATE UNIQUE INDEX activities_idempotency_key_uniq ON highway.activities (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The claim query: WHERE status = 'scheduled' AND queue = $1 AND run_at <= now()
-- ORDER BY priority, run_at, id. Partial, so finished rows never enter the hot path, and
-- ordered exactly like the claim so the keyset hint `(priority, run_at, id) > (...)` is
-- an index range scan that skips the dead entries of rows claimed a moment ago.
CREATE INDEX activities_claim_idx ON highway.activities (queue, priority, run_at, id)
    WHERE status = 'scheduled';
-- The rescuer: running rows ordered by lease expiry.
CREATE INDEX activities_running_lease_idx ON highway.activities (lease_expires_at)
    WHERE status = 'running';
-- The rescuer's timeout sweep over waiting rows that carry a schedule-to-start or
-- schedule-to-close deadline (most rows carry none and stay out of this index).
CREATE INDEX activities_scheduled_deadline_idx ON highway.activities (run_at)
    WHERE status = 'scheduled'
      AND (schedule_to_start_timeout_ms IS NOT NULL OR schedule_to_close_timeout_ms IS NOT NULL);
-- Cancelling a workflow run, and the workflow driver: activities of a run.
CREATE INDEX activities_run_idx ON highway.activities (workflow_run_id)
    WHERE workflow_run_id IS NOT NULL;
-- `highway activities ls --tenant T`: newest first.
CREATE INDEX activities_tenant_created_idx ON highway.activities (tenant_id, created_at DESC);

-- The queue table churns: every activity is inserted, updated two or three times and
-- eventually deleted. Vacuum it far more eagerly than the defaults (20% dead rows) so
-- the claim index stays short, and leave room on each page for HOT updates.
ALTER TABLE highway.activities SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 1,
    autovacuum_analyze_scale_factor = 0.02
);

-- Retry backoff, computed where the clock is: now() + min(initial * coef^(attempt-1), max).
CREATE FUNCTION highway.retry_delay_ms(attempt integer, initial_ms bigint, coefficient double precision, max_ms bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT LEAST(max_ms::double precision,
                 initial_ms * power(coefficient, GREATEST(attempt - 1, 0)))::bigint
$$;

CREATE TABLE highway.workers (
    id            uuid PRIMARY KEY,
    hostname      text NOT NULL,
    daemon_id     text,
    version       text NOT NULL,
    queues        text[] NOT NULL DEFAULT '{}',
    concurrency   integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz,
    status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'draining', 'stopped', 'lost'))
);

-- One row per container the worker created (or adopted). The seed's columns first.
CREATE TABLE highway.docker_containers (
    container_id       text PRIMARY KEY,
    short_id           text NOT NULL,
    activity_id        uuid,
    workflow_run_id    uuid,
    tenant_id          text NOT NULL,
    image              text NOT NULL,
    status             text NOT NULL DEFAULT 'created'
        CHECK (status IN ('created', 'running', 'exited', 'removed', 'missing')),
    exit_code          integer,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    removed_at         timestamptz,
    labels             jsonb NOT NULL DEFAULT '{}'::jsonb,
    gc_protected_until timestamptz,
    -- Beyond the seed (DESIGN.md).
    name               text NOT NULL,
    worker_id          uuid,
    daemon_id          text,
    attempt            integer,
    oom_killed         boolean,
    detached           boolean NOT NULL DEFAULT false,
    detach_expires_at  timestamptz,
    removed_by         text,
    removed_reason     text,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
-- The garbage collector and `containers ls --status running`: live containers.
CREATE INDEX docker_containers_live_idx ON highway.docker_containers (daemon_id, status)
    WHERE status <> 'removed';
-- Lookups of an activity's containers (cleanup, `activities show`).
CREATE INDEX docker_containers_activity_idx ON highway.docker_containers (activity_id);
-- Run cancellation removes every container of a run.
CREATE INDEX docker_containers_run_idx ON highway.docker_containers (workflow_run_id)
    WHERE workflow_run_id IS NOT NULL;
-- Tenant-scoped listings.
CREATE INDEX docker_containers_tenant_idx ON highway.docker_containers (tenant_id, created_at DESC);

-- Append-only: no UPDATE or DELETE is ever issued against it.
CREATE TABLE highway.audit_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    tenant_id       text,
    actor           text NOT NULL,
    action          text NOT NULL,
    target          text,
    activity_id     uuid,
    workflow_run_id uuid,
    outcome         text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}'::jsonb
);
-- `highway audit ls --tenant T --action A --since ...`.
CREATE INDEX audit_log_tenant_at_idx ON highway.audit_log (tenant_id, at DESC);
CREATE INDEX audit_log_target_idx ON highway.audit_log (target) WHERE target IS NOT NULL;

CREATE FUNCTION highway.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'highway.audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON highway.audit_log
    FOR EACH ROW EXECUTE FUNCTION highway.audit_log_append_only();

-- Log lines of activities (container stdout/stderr), for live tailing and for logs after
-- the container is gone. Bounded per activity by the writer; secrets are redacted
-- before a line is stored.
CREATE TABLE highway.activity_logs (
    activity_id uuid NOT NULL REFERENCES highway.activities (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    attempt     integer NOT NULL,
    stream      text NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    line        text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (activity_id, seq)
);
