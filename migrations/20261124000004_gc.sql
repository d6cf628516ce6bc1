-- The garbage collector and the steps of a container stop. A cancel (or any stop) is
-- timestamped step by step on the container's tracking row so that any worker — in
-- practice the garbage collector of the container's daemon — can see how far the owner
-- got and finish what it could not: requested (the stop was decided), signalled
-- (SIGTERM sent through the daemon's stop call), killed (the grace ran out and the
-- daemon sent SIGKILL, or we killed it), removed (`removed_at`, already present).
ALTER TABLE highway.docker_containers
    ADD COLUMN stop_requested_at timestamptz,
    ADD COLUMN stop_signalled_at timestamptz,
    ADD COLUMN killed_at         timestamptz,
    -- Why the stop was decided (`cancelled`, `lease_lost`, `shutdown`, `timeout`, a GC reason).
    ADD COLUMN stop_reason       text;

-- The GC's pending-row sweep: placeholder rows (`pending:<name>`) of a daemon.
CREATE INDEX docker_containers_pending_idx ON highway.docker_containers (daemon_id, created_at)
    WHERE container_id LIKE 'pending:%' AND status = 'created';
