-- A stop of a container that never reached the daemon: both the stop and the kill were
-- refused (daemon unreachable, circuit open). The stop steps recorded for it did not
-- happen there, so a container that exited anyway exited by itself, with a result a
-- retry may take over. Cleared when a later stop gets through.
ALTER TABLE highway.docker_containers ADD COLUMN stop_undelivered_at timestamptz;
