-- Three fixes of issue 7:
-- 1. One global lock order for reruns, so cancel, claim, heartbeat, commit and reap never deadlock.
-- 2. Drafts carry a revision number: an exact optimistic-concurrency token that any client keeps intact.
-- 3. A model call that answered but failed (output that does not fit the schema) still writes its charge line.
--
-- The lock order. Every statement that waits for a row lock takes its locks in this order:
--   rerun_jobs rows (ascending job_id when several)  ->  rerun_items rows (ascending seq)  ->  conversations rows.
-- Statements that lock items without first locking their job (the claim and the heartbeat) use SKIP LOCKED and
-- so never wait for anybody: they cannot close a cycle. Row locks on jobs are FOR NO KEY UPDATE, which leaves
-- foreign-key checks (FOR KEY SHARE, taken when a result or an item referencing the job is inserted) free.

-- ---- 2. revisions ----------------------------------------------------------------------------------

ALTER TABLE agent_versions ADD COLUMN revision integer NOT NULL DEFAULT 1 CHECK (revision >= 1);
-- Versions already edited count their recorded edits.
UPDATE agent_versions v SET revision = 1 + (
    SELECT count(*) FROM agent_version_changes c
    WHERE c.workspace_id = v.workspace_id AND c.agent_id = v.agent_id AND c.version = v.version);

-- ---- 3. charge lines of failed runs ----------------------------------------------------------------

ALTER TABLE charges ALTER COLUMN analysis_result_id DROP NOT NULL;
ALTER TABLE charges ADD COLUMN conversation_id text;
ALTER TABLE charges ADD COLUMN error text;  -- set when the model answered but the run failed
UPDATE charges c SET conversation_id = r.conversation_id FROM analysis_results r WHERE r.id = c.analysis_result_id;
ALTER TABLE charges ALTER COLUMN conversation_id SET NOT NULL;
ALTER TABLE charges ADD CONSTRAINT charges_result_or_error CHECK ((analysis_result_id IS NULL) = (error IS NOT NULL));
CREATE INDEX charges_by_conversation ON charges (workspace_id, conversation_id);

CREATE OR REPLACE FUNCTION record_analysis_result(
    p_workspace_id bigint, p_conversation_id text, p_trigger text, p_agent_id text, p_agent_version integer,
    p_model text, p_summary text, p_successful boolean, p_user_sentiment text, p_in_voicemail boolean,
    p_custom_data jsonb, p_input_tokens integer, p_output_tokens integer, p_cost_usd numeric, p_waived boolean,
    p_reason text, p_rerun_job_id text
) RETURNS analysis_results LANGUAGE plpgsql AS $$
DECLARE
    result analysis_results;
BEGIN
    IF p_trigger <> 'PREVIEW' THEN
        -- NO KEY UPDATE: new rerun items referencing the conversation (FOR KEY SHARE) are not held up.
        PERFORM 1 FROM conversations
        WHERE workspace_id = p_workspace_id AND conversation_id = p_conversation_id
        FOR NO KEY UPDATE;
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
    INSERT INTO charges (workspace_id, analysis_result_id, conversation_id, model, input_tokens, output_tokens,
                         amount_usd, reason, waived)
    VALUES (p_workspace_id, result.id, p_conversation_id, p_model, p_input_tokens, p_output_tokens, p_cost_usd,
            p_reason, p_waived);
    RETURN result;
END $$;

-- ---- 1. the lock order ----------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION finish_rerun_item(
    p_job_id text, p_seq integer, p_owner text, p_error text,
    p_model text, p_summary text, p_successful boolean, p_user_sentiment text, p_in_voicemail boolean,
    p_custom_data jsonb, p_input_tokens integer, p_output_tokens integer, p_cost_usd numeric
) RETURNS rerun_jobs LANGUAGE plpgsql AS $$
DECLARE
    item rerun_items;
    job rerun_jobs;
    result analysis_results;
    ok boolean := p_error IS NULL;
    spent numeric := 0;
BEGIN
    -- The job row first (it serializes the job's commits and its cancel), then the item.
    SELECT * INTO job FROM rerun_jobs WHERE job_id = p_job_id FOR NO KEY UPDATE;
    SELECT * INTO item FROM rerun_items
    WHERE job_id = p_job_id AND seq = p_seq AND lease_owner = p_owner AND status = 'RUNNING'
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF ok THEN
        -- A rerun is charged for every model, including those waived at the initial run.
        result := record_analysis_result(
            item.workspace_id, item.conversation_id, 'RERUN', job.agent_id, job.config_version, p_model, p_summary,
            p_successful, p_user_sentiment, p_in_voicemail, p_custom_data, p_input_tokens, p_output_tokens,
            p_cost_usd, false, 'rerun', p_job_id);
        spent := p_cost_usd;
    ELSIF p_model IS NOT NULL THEN
        -- The model answered, but not usably: the tokens it reported were spent all the same.
        INSERT INTO charges (workspace_id, analysis_result_id, conversation_id, model, input_tokens, output_tokens,
                             amount_usd, reason, waived, error)
        VALUES (item.workspace_id, NULL, item.conversation_id, p_model, p_input_tokens, p_output_tokens, p_cost_usd,
                'rerun', false, p_error);
        spent := p_cost_usd;
    END IF;
    UPDATE rerun_jobs j SET
        succeeded = j.succeeded + ok::int,
        failed = j.failed + (NOT ok)::int,
        cost_usd = j.cost_usd + spent,
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

CREATE OR REPLACE FUNCTION release_rerun_item(p_job_id text, p_seq integer, p_owner text) RETURNS rerun_jobs LANGUAGE plpgsql AS $$
DECLARE
    job rerun_jobs;
BEGIN
    SELECT * INTO job FROM rerun_jobs WHERE job_id = p_job_id FOR NO KEY UPDATE;
    PERFORM 1 FROM rerun_items
    WHERE job_id = p_job_id AND seq = p_seq AND lease_owner = p_owner AND status = 'RUNNING'
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF job.cancel_requested_at IS NULL THEN
        UPDATE rerun_items SET status = 'PENDING', lease_owner = NULL, lease_expires_at = NULL
        WHERE job_id = p_job_id AND seq = p_seq;
        RETURN job;
    END IF;
    UPDATE rerun_items SET status = 'CANCELED', lease_owner = NULL, lease_expires_at = NULL, finished_at = clock_timestamp()
    WHERE job_id = p_job_id AND seq = p_seq;
    RETURN count_canceled_rerun_items(p_job_id, 1);
END $$;

CREATE OR REPLACE FUNCTION reap_canceled_rerun_items() RETURNS integer LANGUAGE plpgsql AS $$
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
        ORDER BY i.job_id
    LOOP
        PERFORM 1 FROM rerun_jobs WHERE job_id = abandoned.job_id FOR NO KEY UPDATE;
        WITH expired AS (
            SELECT seq FROM rerun_items
            WHERE job_id = abandoned.job_id AND status = 'RUNNING' AND lease_expires_at < clock_timestamp()
            ORDER BY seq
            FOR UPDATE
        )
        UPDATE rerun_items i SET status = 'CANCELED', lease_owner = NULL, lease_expires_at = NULL, finished_at = clock_timestamp()
        FROM expired
        WHERE i.job_id = abandoned.job_id AND i.seq = expired.seq;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            PERFORM count_canceled_rerun_items(abandoned.job_id, n);
            total := total + n;
        END IF;
    END LOOP;
    RETURN total;
END $$;
