-- Durable cron: schedules and one row per slot they produced. Every scheduler (each
-- worker runs one, plus `highway scheduler`) works on these rows with no leader: a slot
-- is taken by a compare-and-set on the schedule's cursor (`last_fired_at`,
-- `next_run_at`, `version`), and UNIQUE (schedule_id, fire_at) below is the backstop.
-- Times that judge "due" come from the database's clock (through the scheduler's clock).

CREATE TABLE highway.schedules (
    id                 uuid PRIMARY KEY,
    tenant_id          text NOT NULL,
    name               text NOT NULL,
    -- As written by the user (5 fields, or 6 with seconds); normalised when evaluated.
    cron               text NOT NULL,
    -- IANA name (chrono-tz); wall-clock fields of `cron` are read in this zone.
    timezone           text NOT NULL DEFAULT 'UTC',
    -- The activity to enqueue: {kind, params, queue, priority, retry_policy, timeouts}.
    template           jsonb NOT NULL,
    overlap_policy     text NOT NULL DEFAULT 'skip'
        CHECK (overlap_policy IN ('skip', 'allow', 'buffer_one', 'cancel_other')),
    catchup_window_ms  bigint NOT NULL DEFAULT 3600000 CHECK (catchup_window_ms >= 0),
    catchup_policy     text NOT NULL DEFAULT 'latest'
        CHECK (catchup_policy IN ('latest', 'all', 'none')),
    max_catchup_burst  integer NOT NULL DEFAULT 10 CHECK (max_catchup_burst >= 1),
    -- Each fire's activity starts up to this much after its slot (deterministic per slot,
    -- so two schedulers computing the same slot build the same request).
    jitter_ms          bigint NOT NULL DEFAULT 0 CHECK (jitter_ms >= 0),
    paused             boolean NOT NULL DEFAULT false,
    paused_note        text,
    paused_at          timestamptz,
    start_at           timestamptz,
    end_at             timestamptz,
    -- The next slot to handle; NULL when none is left (past end_at).
    next_run_at        timestamptz,
    -- Nominal time of the last slot handled (fired, skipped, missed or buffered). Only
    -- ever moves forward (CHECK below + the CAS), so a clock jumping back never re-fires.
    last_fired_at      timestamptz,
    -- The activity of the newest fire: what the overlap policy looks at.
    last_activity_id   uuid,
    -- buffer_one: the one slot waiting for the running activity to finish.
    buffered_fire_at   timestamptz,
    -- Bumped by every operator change (update, pause, resume): a scheduler holding an
    -- older snapshot loses its compare-and-set.
    version            bigint NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_tenant_name_uniq UNIQUE (tenant_id, name),
    CONSTRAINT schedules_window CHECK (end_at IS NULL OR start_at IS NULL OR end_at > start_at),
    CONSTRAINT schedules_cursor_order CHECK (last_fired_at IS NULL OR next_run_at IS NULL OR next_run_at > last_fired_at)
);
-- The scheduler's due query: WHERE NOT paused AND next_run_at <= $now ORDER BY next_run_at.
-- Partial: paused and finished schedules never enter the hot path.
CREATE INDEX schedules_due_idx ON highway.schedules (next_run_at)
    WHERE NOT paused AND next_run_at IS NOT NULL;
-- The same due query's second arm: buffer_one schedules holding a slot, checked every
-- pass until their running activity finishes (usually none).
CREATE INDEX schedules_buffered_idx ON highway.schedules (id)
    WHERE NOT paused AND buffered_fire_at IS NOT NULL;
-- `UNIQUE (tenant_id, name)` above serves `schedules show NAME` and `schedules ls --tenant`.

-- Monotone cursor, enforced where every writer goes through.
CREATE FUNCTION highway.schedules_monotone_cursor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.last_fired_at IS NOT NULL
       AND (NEW.last_fired_at IS NULL OR NEW.last_fired_at < OLD.last_fired_at) THEN
        RAISE EXCEPTION 'highway.schedules.last_fired_at may only move forward (% -> %)',
            OLD.last_fired_at, NEW.last_fired_at;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER schedules_monotone_cursor BEFORE UPDATE OF last_fired_at ON highway.schedules
    FOR EACH ROW EXECUTE FUNCTION highway.schedules_monotone_cursor();

-- One row per slot, whatever became of it. `buffered` is the only state that changes
-- afterwards (to `fired` or `skipped`), and `missed`/`skipped` become `fired` when a
-- backfill runs the slot; every such update is guarded by the expected old outcome.
CREATE TABLE highway.schedule_fires (
    schedule_id  uuid NOT NULL REFERENCES highway.schedules (id) ON DELETE CASCADE,
    -- Nominal time of the slot (for `trigger`, the database time of the request).
    fire_at      timestamptz NOT NULL,
    outcome      text NOT NULL
        CHECK (outcome IN ('fired', 'skipped', 'missed', 'deduplicated', 'buffered')),
    activity_id  uuid,
    -- Why: "catch-up window", "overlap: previous activity ... still running", "trigger", ...
    reason       text,
    -- cron | trigger | backfill
    source       text NOT NULL DEFAULT 'cron' CHECK (source IN ('cron', 'trigger', 'backfill')),
    -- clock_timestamp() of the write: lateness = recorded_at - fire_at.
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT schedule_fires_slot_uniq UNIQUE (schedule_id, fire_at),
    CONSTRAINT schedule_fires_fired_has_activity CHECK (outcome <> 'fired' OR activity_id IS NOT NULL)
);
-- `UNIQUE (schedule_id, fire_at)` above serves `schedules fires ID` (newest first:
-- WHERE schedule_id = $1 ORDER BY fire_at DESC) and the slot lookups of backfill.
