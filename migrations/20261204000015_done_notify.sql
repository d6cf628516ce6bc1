-- Waiting is notified, not polled: the moment an activity or a workflow run reaches a
-- terminal state, its id is sent on a channel (`highway_activity_done`,
-- `highway_run_done`). Waiters (`Client::wait`, `GET /v1/activities/{id}?wait=`, the CLI's
-- `--wait`) LISTEN and re-read the row when their id arrives, polling only as a fallback.
-- A trigger rather than a NOTIFY beside each terminal UPDATE so that no path that ends an
-- activity (completion, failure, cancel, timeout, rescue) can forget it; the WHEN clause
-- keeps it off every other update (claims, heartbeats).

CREATE FUNCTION highway.notify_activity_done() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('highway_activity_done', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER activities_done_notify
    AFTER UPDATE OF status ON highway.activities
    FOR EACH ROW
    WHEN (OLD.status IN ('scheduled', 'running')
          AND NEW.status IN ('succeeded', 'failed', 'cancelled', 'timed_out'))
    EXECUTE FUNCTION highway.notify_activity_done();

CREATE FUNCTION highway.notify_run_done() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('highway_run_done', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER workflow_runs_done_notify
    AFTER UPDATE OF status ON highway.workflow_runs
    FOR EACH ROW
    WHEN (OLD.status IN ('running', 'cancelling')
          AND NEW.status IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION highway.notify_run_done();
