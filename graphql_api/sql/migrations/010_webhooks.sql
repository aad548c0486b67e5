-- Webhooks when a rerun ends (issue 12, item 6): the endpoints a workspace registers, and the outbox of
-- deliveries. A delivery row is written by a trigger in the transaction that gives the job its final state,
-- whichever path does (finish_rerun_item, the cancel, release and reap functions), so an event is never lost
-- nor sent for a state that rolled back. Delivery loops claim due rows with FOR UPDATE SKIP LOCKED.

CREATE TABLE webhook_endpoints (
    id                           text PRIMARY KEY CHECK (id ~ '^whe_[0-9a-f]{20}$'),
    workspace_id                 bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    url                          text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    description                  text NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    event_types                  text[] NOT NULL CHECK (cardinality(event_types) > 0 AND event_types <@ '{rerun.finished}'),
    -- Signing needs the secret itself: it is shown once, when made, and never read back by the API.
    secret                       text NOT NULL CHECK (secret ~ '^whsec_'),
    -- After a rotation the old secret signs too (a second signature) for a while, so receivers can switch.
    previous_secret              text CHECK (previous_secret ~ '^whsec_'),
    previous_secret_expires_at   timestamptz,
    enabled                      boolean NOT NULL DEFAULT true,
    disabled_at                  timestamptz,
    secret_rotated_at            timestamptz,
    created_at                   timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (enabled = (disabled_at IS NULL)),
    CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);
CREATE INDEX webhook_endpoints_listing ON webhook_endpoints (workspace_id, created_at DESC, id DESC);
-- What the trigger reads: a workspace's enabled endpoints.
CREATE INDEX webhook_endpoints_enabled ON webhook_endpoints (workspace_id) WHERE enabled;

CREATE TABLE webhook_deliveries (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id      bigint NOT NULL,
    endpoint_id       text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type        text NOT NULL,
    webhook_id        text NOT NULL UNIQUE CHECK (webhook_id ~ '^msg_[0-9a-f]{32}$'),  -- the webhook-id header
    job_id            text,                     -- the rerun the event is about (no foreign key: events outlive jobs)
    payload           jsonb NOT NULL,
    status            text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When a PENDING delivery is due; a claim moves it past the request's timeout, so a delivery loop that
    -- dies mid-request leaves it due again rather than stuck.
    next_attempt_at   timestamptz,
    last_attempt_at   timestamptz,
    last_status_code  integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at      timestamptz,
    CHECK ((status = 'PENDING') = (next_attempt_at IS NOT NULL)),
    CHECK ((status = 'DELIVERED') = (delivered_at IS NOT NULL))
);
-- What delivery loops scan: due deliveries, oldest first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'PENDING';
-- An endpoint's deliveries, newest first (webhookDeliveries).
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id DESC);
CREATE INDEX webhook_deliveries_by_job ON webhook_deliveries (job_id) WHERE job_id IS NOT NULL;

-- The rerun.finished event of a job, in the Standard Webhooks shape { type, timestamp, data }. The impact
-- compares each succeeded item's new result with the one it replaced.
CREATE FUNCTION rerun_finished_event(job rerun_jobs) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'type', 'rerun.finished',
        'timestamp', gql_instant(COALESCE(job.finished_at, job.updated_at)),
        'data', jsonb_build_object(
            'rerun', true,
            'job_id', job.job_id,
            'agent_id', job.agent_id,
            'kind', job.kind,
            'status', job.status,
            'total', job.total,
            'succeeded', job.succeeded,
            'failed', job.failed,
            'canceled', job.canceled,
            'cost_usd', job.cost_usd::text,
            'estimated_cost_usd', job.estimated_cost_usd::text,
            'config_version', job.config_version,
            'created_at', gql_instant(job.created_at),
            'started_at', gql_instant(job.started_at),
            'finished_at', gql_instant(job.finished_at),
            'impact', (
                SELECT jsonb_build_object(
                    'compared', count(prev.id),
                    'without_previous_result', count(*) - count(prev.id),
                    'flipped_to_successful',
                        count(*) FILTER (WHERE prev.id IS NOT NULL AND cur.successful AND prev.successful IS NOT TRUE),
                    'flipped_to_unsuccessful',
                        count(*) FILTER (WHERE prev.id IS NOT NULL AND prev.successful AND cur.successful IS NOT TRUE),
                    'sentiment_changed',
                        count(*) FILTER (WHERE prev.id IS NOT NULL AND cur.user_sentiment <> prev.user_sentiment))
                FROM rerun_items i
                JOIN analysis_results cur ON cur.id = i.result_id
                LEFT JOIN analysis_results prev ON prev.id = i.previous_result_id
                WHERE i.job_id = job.job_id AND i.status = 'SUCCEEDED')))
$$;

-- One delivery per enabled endpoint of the workspace that takes the event. It only reads and inserts: no row
-- lock is waited for, so the lock order of migration 004 (jobs, items, conversations) is kept. Deferred to the
-- commit: finish_rerun_item updates the job before the item whose result ends it, and the impact counts it.
CREATE FUNCTION enqueue_rerun_finished_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    event jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints
                   WHERE workspace_id = NEW.workspace_id AND enabled AND 'rerun.finished' = ANY(event_types)) THEN
        RETURN NULL;
    END IF;
    event := rerun_finished_event(NEW);
    INSERT INTO webhook_deliveries (workspace_id, endpoint_id, event_type, webhook_id, job_id, payload, next_attempt_at)
    SELECT NEW.workspace_id, e.id, 'rerun.finished', 'msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.job_id,
           event, clock_timestamp()
    FROM webhook_endpoints e
    WHERE e.workspace_id = NEW.workspace_id AND e.enabled AND 'rerun.finished' = ANY(e.event_types)
    ORDER BY e.id;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER rerun_jobs_finished_webhooks
AFTER UPDATE OF status ON rerun_jobs
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW
WHEN (OLD.status IN ('QUEUED', 'RUNNING') AND NEW.status IN ('SUCCEEDED', 'PARTIALLY_FAILED', 'FAILED', 'CANCELED'))
EXECUTE FUNCTION enqueue_rerun_finished_webhooks();
