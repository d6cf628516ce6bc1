-- Deployment identity: a uuid created once per database. Every container a worker of
-- this database creates carries it as the label `highway.deployment_id`, beside the
-- human `highway.deployment` name; collectors, worker cleanup and `gc --dry-run` act
-- only on containers carrying their own database's identity, so two stacks sharing a
-- Docker daemon (even with the same `--deployment` name) never touch each other's
-- containers. A database copied with CREATE DATABASE ... TEMPLATE or restored from a
-- dump carries the same identity as its source: give the copy its own with
--   UPDATE highway.settings SET value = gen_random_uuid()::text WHERE name = 'deployment_id';
CREATE TABLE highway.settings (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO highway.settings (name, value) VALUES ('deployment_id', gen_random_uuid()::text);

-- A container on a Docker host that stayed unreachable (no worker of its daemon
-- heartbeating) for `--host-lost-after` is marked `lost` by the retry that waited for
-- it, so the at-most-one-live-container rule cannot deadlock on a dead host. The host's
-- own collector removes the container when the host returns (`lost` → `removed`).
ALTER TABLE highway.docker_containers DROP CONSTRAINT docker_containers_status_check;
ALTER TABLE highway.docker_containers ADD CONSTRAINT docker_containers_status_check
    CHECK (status IN ('created', 'running', 'exited', 'removed', 'missing', 'lost'));

-- The retry's "is that host lost?" question: the freshest heartbeat of any worker bound
-- to a daemon.
CREATE INDEX workers_daemon_idx ON highway.workers (daemon_id, heartbeat_at DESC)
    WHERE daemon_id IS NOT NULL;
