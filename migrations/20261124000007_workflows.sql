-- Workflow runs driven from a definition (issue 9): one row per step of a run. The run
-- row (`workflow_runs`) keeps the definition and input; this table is the driver's
-- durable state, so any worker can continue a run from the database alone.
CREATE TABLE highway.workflow_steps (
    run_id          uuid NOT NULL REFERENCES highway.workflow_runs (id) ON DELETE CASCADE,
    step_id         text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'scheduled', 'succeeded', 'failed', 'cancelled', 'skipped', 'cached')),
    -- The activity that runs the step (idempotency key `run:<run>:<step>`).
    activity_id     uuid,
    -- The step's output artifact (`result.outputs.id` of its activity), for later steps.
    outputs_artifact uuid,
    -- Cache decision: hit | miss-build-as | miss-no-commit (NULL without a cache).
    cache_decision  text CHECK (cache_decision IN ('hit', 'miss-build-as', 'miss-no-commit')),
    -- The resolved cache key, the snapshot image (`docker_images.reference`) the step
    -- reused or committed, and the `tools.docker.commit` activity of a miss.
    cache_key       text,
    cache_image     text,
    commit_activity_id uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    scheduled_at    timestamptz,
    finished_at     timestamptz,
    PRIMARY KEY (run_id, step_id)
);
-- The completer maps a finished activity to its step.
CREATE INDEX workflow_steps_activity_idx ON highway.workflow_steps (activity_id)
    WHERE activity_id IS NOT NULL;
-- The sweeper: live runs that carry a definition.
CREATE INDEX workflow_runs_live_definition_idx ON highway.workflow_runs (created_at)
    WHERE status IN ('running', 'cancelling') AND definition IS NOT NULL;
