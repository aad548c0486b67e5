-- Batch mode (issue 12, item 2): a rerun job's model requests go through the Gemini Batch API, at the batch price.
-- Interactive workers never claim a BATCH job's items; a batch runner (in every process that runs workers) takes
-- its pending items in chunks, one provider batch per chunk (rerun_batches), polls each batch and records its
-- results through finish_rerun_item like a worker does. The items of a submitted batch are RUNNING with the lease
-- owner 'batch:<batch_id>' and a lease that never expires: the batch row, not the item, is the unit of work.

ALTER TABLE rerun_jobs ADD COLUMN mode text NOT NULL DEFAULT 'INTERACTIVE' CHECK (mode IN ('INTERACTIVE', 'BATCH'));

CREATE TABLE rerun_batches (
    batch_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id            text NOT NULL REFERENCES rerun_jobs (job_id) ON DELETE CASCADE,
    -- What the provider knows the batch by before it has a name: found again after a crash mid-submit.
    display_name      text NOT NULL UNIQUE,
    provider_name     text,                  -- "batches/..." once the provider accepted it
    model             text NOT NULL,
    items             integer NOT NULL CHECK (items > 0),
    state             text NOT NULL DEFAULT 'SUBMITTING'
                      CHECK (state IN ('SUBMITTING', 'PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'EXPIRED')),
    -- Its results (or failure) are recorded on the items: nothing left to do.
    recorded          boolean NOT NULL DEFAULT false,
    error             text,
    submit_attempts   integer NOT NULL DEFAULT 0,
    cancel_sent_at    timestamptz,
    -- One runner works on a batch at a time: it holds it until lease_expires_at.
    lease_owner       text,
    lease_expires_at  timestamptz,
    next_poll_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    polls             integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    submitted_at      timestamptz,
    finished_at       timestamptz,
    CHECK ((state = 'SUBMITTING') = (provider_name IS NULL))
);
-- What runners look for: batches with something left to do, when due.
CREATE INDEX rerun_batches_due ON rerun_batches (next_poll_at) WHERE NOT recorded;
CREATE INDEX rerun_batches_by_job ON rerun_batches (job_id, batch_id);

-- The rerun.finished event says which mode the job ran in.
CREATE OR REPLACE FUNCTION rerun_finished_event(job rerun_jobs) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'type', 'rerun.finished',
        'timestamp', gql_instant(COALESCE(job.finished_at, job.updated_at)),
        'data', jsonb_build_object(
            'rerun', true,
            'job_id', job.job_id,
            'agent_id', job.agent_id,
            'kind', job.kind,
            'mode', job.mode,
            'status', job.status,
            'total', job.total,
            'succeeded', job.succeeded,
            'failed', job.failed,
            'canceled', job.canceled,
            'skipped', job.skipped,
            'cost_usd', job.cost_usd::text,
            'estimated_cost_usd', job.estimated_cost_usd::text,
            'config_version', job.config_version,
            'created_at', gql_instant(job.created_at),
            'started_at', gql_instant(job.started_at),
            'finished_at', gql_instant(job.finished_at),
            'impact', rerun_impact(job.job_id, NULL) - 'custom_data_changed'))
$$;
