-- Rerun jobs and their items. Items are the work queue: workers claim them with
-- FOR UPDATE SKIP LOCKED and a lease that expires, so a worker that dies loses nothing.

CREATE TABLE rerun_jobs (
    job_id                   text PRIMARY KEY CHECK (job_id ~ '^rerun_[0-9a-f]{20}$'),
    workspace_id             bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    agent_id                 text NOT NULL,
    kind                     text NOT NULL CHECK (kind IN ('CALL', 'CHAT')),
    requested_by             text NOT NULL,            -- the API key prefix that asked
    idempotency_key          text,
    request_hash             text NOT NULL,            -- what was asked, to tell a retry from a reuse of the key
    config_version           integer NOT NULL,         -- the draft version whose config was snapshotted
    config_snapshot          jsonb NOT NULL,
    targets                  jsonb NOT NULL,           -- explicit ids or the filter, as requested
    status                   text NOT NULL DEFAULT 'QUEUED'
                             CHECK (status IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'PARTIALLY_FAILED', 'FAILED', 'CANCELED')),
    cancel_requested_at      timestamptz,
    total                    integer NOT NULL DEFAULT 0 CHECK (total >= 0),
    succeeded                integer NOT NULL DEFAULT 0 CHECK (succeeded >= 0),
    failed                   integer NOT NULL DEFAULT 0 CHECK (failed >= 0),
    canceled                 integer NOT NULL DEFAULT 0 CHECK (canceled >= 0),
    estimated_input_tokens   bigint NOT NULL,
    estimated_output_tokens  bigint NOT NULL,
    estimated_cost_usd       numeric(16, 8) NOT NULL,
    cost_usd                 numeric(16, 8) NOT NULL DEFAULT 0,
    created_at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at               timestamptz,
    finished_at              timestamptz,
    updated_at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents ON DELETE CASCADE,
    CHECK (succeeded + failed + canceled <= total)
);
CREATE UNIQUE INDEX rerun_jobs_idempotency ON rerun_jobs (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX rerun_jobs_listing ON rerun_jobs (workspace_id, created_at DESC, job_id DESC);
CREATE INDEX rerun_jobs_active ON rerun_jobs (created_at) WHERE status IN ('QUEUED', 'RUNNING');

CREATE TABLE rerun_items (
    job_id              text NOT NULL REFERENCES rerun_jobs (job_id) ON DELETE CASCADE,
    seq                 integer NOT NULL,          -- order within the job
    workspace_id        bigint NOT NULL,
    conversation_id     text NOT NULL,
    status              text NOT NULL DEFAULT 'PENDING'
                        CHECK (status IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELED')),
    attempts            integer NOT NULL DEFAULT 0,
    lease_owner         text,
    lease_expires_at    timestamptz,
    previous_result_id  bigint REFERENCES analysis_results (id) ON DELETE SET NULL,
    result_id           bigint REFERENCES analysis_results (id) ON DELETE SET NULL,
    error               text,
    -- 1, 2, 3 ... in the order items of this job finished (commits are serialized on the job row),
    -- so progress readers resume from a number and miss nothing.
    finish_index        integer,
    started_at          timestamptz,
    finished_at         timestamptz,
    PRIMARY KEY (job_id, seq),
    UNIQUE (job_id, conversation_id),
    UNIQUE (job_id, finish_index),
    FOREIGN KEY (workspace_id, conversation_id) REFERENCES conversations ON DELETE CASCADE,
    CHECK ((status = 'RUNNING') = (lease_owner IS NOT NULL)),
    CHECK ((status IN ('SUCCEEDED', 'FAILED')) = (finish_index IS NOT NULL))
);
-- What workers scan: open items in job order.
CREATE INDEX rerun_items_open ON rerun_items (job_id, seq) WHERE status IN ('PENDING', 'RUNNING');
CREATE INDEX rerun_items_lease ON rerun_items (lease_owner) WHERE status = 'RUNNING';

ALTER TABLE analysis_results ADD COLUMN rerun_job_id text REFERENCES rerun_jobs (job_id) ON DELETE SET NULL;
-- One job gives a conversation at most one result.
CREATE UNIQUE INDEX analysis_results_one_per_job ON analysis_results (rerun_job_id, conversation_id) WHERE rerun_job_id IS NOT NULL;

-- Which conversations a rerun targets: explicit ids, or an agent's conversations matching a filter
-- (NULL parameters: no condition). Only finished conversations can be analyzed.
CREATE FUNCTION rerun_targets(
    p_workspace_id bigint, p_kind text, p_ids text[], p_agent_id text, p_versions int[],
    p_started_from timestamptz, p_started_to timestamptz, p_statuses text[], p_successful boolean, p_sentiments text[]
) RETURNS TABLE (conversation_id text, transcript_chars integer, current_result_id bigint, sort_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT c.conversation_id, length(c.transcript), r.id, c.sort_at
    FROM conversations c
    LEFT JOIN analysis_results r
           ON r.workspace_id = c.workspace_id AND r.conversation_id = c.conversation_id AND r.is_current
    WHERE c.workspace_id = p_workspace_id
      AND c.kind = p_kind
      AND c.status IN ('not_connected', 'ended', 'error')
      AND (p_ids IS NULL OR c.conversation_id = ANY(p_ids))
      AND (p_agent_id IS NULL OR c.agent_id = p_agent_id)
      AND (p_versions IS NULL OR c.agent_version = ANY(p_versions))
      AND (p_started_from IS NULL OR c.started_at >= p_started_from)
      AND (p_started_to IS NULL OR c.started_at < p_started_to)
      AND (p_statuses IS NULL OR c.status = ANY(p_statuses))
      AND (p_successful IS NULL OR r.successful = p_successful)
      AND (p_sentiments IS NULL OR r.user_sentiment = ANY(p_sentiments))
$$;

-- Store one analysis run: the result, its charge line, and (unless a preview) the switch of the
-- conversation's current result, all in the caller's transaction.
CREATE FUNCTION record_analysis_result(
    p_workspace_id bigint, p_conversation_id text, p_trigger text, p_agent_id text, p_agent_version integer,
    p_model text, p_summary text, p_successful boolean, p_user_sentiment text, p_in_voicemail boolean,
    p_custom_data jsonb, p_input_tokens integer, p_output_tokens integer, p_cost_usd numeric, p_waived boolean,
    p_reason text, p_rerun_job_id text
) RETURNS analysis_results LANGUAGE plpgsql AS $$
DECLARE
    result analysis_results;
BEGIN
    IF p_trigger <> 'PREVIEW' THEN
        PERFORM 1 FROM conversations
        WHERE workspace_id = p_workspace_id AND conversation_id = p_conversation_id
        FOR UPDATE;
        UPDATE analysis_results SET is_current = false
        WHERE workspace_id = p_workspace_id AND conversation_id = p_conversation_id AND is_current;
    END IF;
    INSERT INTO analysis_results (
        workspace_id, conversation_id, trigger, agent_id, agent_version, model, summary, successful,
        user_sentiment, in_voicemail, custom_data, input_tokens, output_tokens, cost_usd, charged, is_current, rerun_job_id)
    VALUES (
        p_workspace_id, p_conversation_id, p_trigger, p_agent_id, p_agent_version, p_model, p_summary, p_successful,
        p_user_sentiment, p_in_voicemail, p_custom_data, p_input_tokens, p_output_tokens, p_cost_usd, NOT p_waived,
        p_trigger <> 'PREVIEW', p_rerun_job_id)
    RETURNING * INTO result;
    INSERT INTO charges (workspace_id, analysis_result_id, model, input_tokens, output_tokens, amount_usd, reason, waived)
    VALUES (p_workspace_id, result.id, p_model, p_input_tokens, p_output_tokens, p_cost_usd, p_reason, p_waived);
    RETURN result;
END $$;

-- Tell listeners that a job changed: the payload is small (ids, the finished count, the status);
-- subscribers read the rest from the tables.
CREATE FUNCTION notify_rerun_progress(job rerun_jobs) RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify('rerun_progress', json_build_object(
        'w', job.workspace_id, 'j', job.job_id, 'i', job.succeeded + job.failed, 's', job.status)::text)
$$;

-- Finish one claimed rerun item, only if this worker still holds its lease: the result and its charge
-- (on success), the item's status, the job's counters and final status, and a progress notification
-- commit together. Returns NULL when the lease was lost (another worker owns the item now).
CREATE FUNCTION finish_rerun_item(
    p_job_id text, p_seq integer, p_owner text, p_error text,
    p_model text, p_summary text, p_successful boolean, p_user_sentiment text, p_in_voicemail boolean,
    p_custom_data jsonb, p_input_tokens integer, p_output_tokens integer, p_cost_usd numeric
) RETURNS rerun_jobs LANGUAGE plpgsql AS $$
DECLARE
    item rerun_items;
    job rerun_jobs;
    result analysis_results;
    ok boolean := p_error IS NULL;
BEGIN
    SELECT * INTO item FROM rerun_items
    WHERE job_id = p_job_id AND seq = p_seq AND lease_owner = p_owner AND status = 'RUNNING'
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO job FROM rerun_jobs WHERE job_id = p_job_id;
    IF ok THEN
        -- A rerun is charged for every model, including those waived at the initial run.
        result := record_analysis_result(
            item.workspace_id, item.conversation_id, 'RERUN', job.agent_id, job.config_version, p_model, p_summary,
            p_successful, p_user_sentiment, p_in_voicemail, p_custom_data, p_input_tokens, p_output_tokens,
            p_cost_usd, false, 'rerun', p_job_id);
    END IF;
    UPDATE rerun_jobs j SET
        succeeded = j.succeeded + ok::int,
        failed = j.failed + (NOT ok)::int,
        cost_usd = j.cost_usd + CASE WHEN ok THEN p_cost_usd ELSE 0 END,
        updated_at = clock_timestamp(),
        status = CASE
            WHEN j.succeeded + j.failed + j.canceled + 1 < j.total THEN j.status
            WHEN j.cancel_requested_at IS NOT NULL AND j.canceled > 0 THEN 'CANCELED'
            WHEN j.failed + (NOT ok)::int = 0 THEN 'SUCCEEDED'
            WHEN j.succeeded + ok::int = 0 THEN 'FAILED'
            ELSE 'PARTIALLY_FAILED' END,
        finished_at = CASE WHEN j.succeeded + j.failed + j.canceled + 1 >= j.total THEN clock_timestamp() END
    WHERE j.job_id = p_job_id
    RETURNING j.* INTO job;
    UPDATE rerun_items SET
        status = CASE WHEN ok THEN 'SUCCEEDED' ELSE 'FAILED' END,
        lease_owner = NULL, lease_expires_at = NULL, error = p_error, result_id = result.id,
        finish_index = job.succeeded + job.failed, finished_at = clock_timestamp()
    WHERE job_id = p_job_id AND seq = p_seq;
    PERFORM notify_rerun_progress(job);
    RETURN job;
END $$;

-- Count items of a job as canceled; the job ends CANCELED when nothing else is left.
CREATE FUNCTION count_canceled_rerun_items(p_job_id text, p_count integer) RETURNS rerun_jobs LANGUAGE plpgsql AS $$
DECLARE
    job rerun_jobs;
BEGIN
    UPDATE rerun_jobs j SET
        canceled = j.canceled + p_count,
        updated_at = clock_timestamp(),
        status = CASE WHEN j.succeeded + j.failed + j.canceled + p_count >= j.total THEN 'CANCELED' ELSE j.status END,
        finished_at = CASE WHEN j.succeeded + j.failed + j.canceled + p_count >= j.total THEN clock_timestamp() END
    WHERE j.job_id = p_job_id
    RETURNING j.* INTO job;
    PERFORM notify_rerun_progress(job);
    RETURN job;
END $$;

-- A worker gives back an item it claimed but won't finish (it is stopping, its job is being
-- canceled, or it could not commit): canceled if the job is being canceled, else pending again.
-- Returns NULL when the worker no longer held the item.
CREATE FUNCTION release_rerun_item(p_job_id text, p_seq integer, p_owner text) RETURNS rerun_jobs LANGUAGE plpgsql AS $$
DECLARE
    job rerun_jobs;
BEGIN
    PERFORM 1 FROM rerun_items
    WHERE job_id = p_job_id AND seq = p_seq AND lease_owner = p_owner AND status = 'RUNNING'
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO job FROM rerun_jobs WHERE job_id = p_job_id;
    IF job.cancel_requested_at IS NULL THEN
        UPDATE rerun_items SET status = 'PENDING', lease_owner = NULL, lease_expires_at = NULL
        WHERE job_id = p_job_id AND seq = p_seq;
        RETURN job;
    END IF;
    UPDATE rerun_items SET status = 'CANCELED', lease_owner = NULL, lease_expires_at = NULL, finished_at = clock_timestamp()
    WHERE job_id = p_job_id AND seq = p_seq;
    RETURN count_canceled_rerun_items(p_job_id, 1);
END $$;

-- Items of jobs being canceled whose worker is gone (lease expired) are canceled, so the job can end.
-- Workers call it now and then; it returns how many items it canceled.
CREATE FUNCTION reap_canceled_rerun_items() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    abandoned record;
    n integer;
    total integer := 0;
BEGIN
    FOR abandoned IN
        SELECT DISTINCT i.job_id
        FROM rerun_jobs j JOIN rerun_items i ON i.job_id = j.job_id
        WHERE j.status IN ('QUEUED', 'RUNNING') AND j.cancel_requested_at IS NOT NULL
          AND i.status = 'RUNNING' AND i.lease_expires_at < clock_timestamp()
    LOOP
        UPDATE rerun_items SET status = 'CANCELED', lease_owner = NULL, lease_expires_at = NULL, finished_at = clock_timestamp()
        WHERE job_id = abandoned.job_id AND status = 'RUNNING' AND lease_expires_at < clock_timestamp();
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            PERFORM count_canceled_rerun_items(abandoned.job_id, n);
            total := total + n;
        END IF;
    END LOOP;
    RETURN total;
END $$;
