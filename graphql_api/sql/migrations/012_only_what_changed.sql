-- Rerun only what changed (issue 12, item 1). A rerun item may ask the model for some outputs only; its new
-- result carries the other outputs over from the conversation's current result and records, per output, which
-- run produced it (output_sources) and the definition it was produced with (output_fingerprints), so a later
-- `onlyChanged` rerun can tell, per conversation, which outputs a draft would change.
--
-- Output names: summary, successful, userSentiment, inVoicemail (calls), and customData.<field name>.

-- Per output, a digest of what decides it: the model and the output's prompt or field definition. `successful`
-- also depends on the required fields (a required field left empty makes a conversation unsuccessful). A NULL
-- prompt (the built-in default) digests as null. Field definitions are normalized so that a field stored without
-- its optional keys digests like one stored with their defaults.
CREATE FUNCTION analysis_output_fingerprints(p_config jsonb, p_kind text) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH fields AS (
        SELECT f.ord, f.def ->> 'name' AS name,
               jsonb_build_object(
                   'name', f.def -> 'name',
                   'type', f.def -> 'type',
                   'description', to_jsonb(COALESCE(f.def ->> 'description', '')),
                   'examples', COALESCE(f.def -> 'examples', '[]'::jsonb),
                   'choices', COALESCE(f.def -> 'choices', 'null'::jsonb),
                   'required', to_jsonb(COALESCE((f.def ->> 'required')::boolean, false))) AS def
        FROM jsonb_array_elements(COALESCE(p_config -> 'data_fields', '[]'::jsonb)) WITH ORDINALITY AS f (def, ord)
    )
    SELECT jsonb_build_object(
               'summary', md5(jsonb_build_array(p_config -> 'model', p_config -> 'summary_prompt')::text),
               'successful', md5(jsonb_build_array(
                   p_config -> 'model', p_config -> 'successful_prompt',
                   (SELECT COALESCE(jsonb_agg(def ORDER BY name), '[]'::jsonb) FROM fields
                    WHERE (def ->> 'required')::boolean))::text),
               'userSentiment', md5(jsonb_build_array(p_config -> 'model', p_config -> 'user_sentiment_prompt')::text))
           || CASE WHEN p_kind = 'CALL'
                   THEN jsonb_build_object('inVoicemail', md5(jsonb_build_array(p_config -> 'model')::text))
                   ELSE '{}'::jsonb END
           || COALESCE((SELECT jsonb_object_agg('customData.' || name, md5(jsonb_build_array(p_config -> 'model', def)::text))
                        FROM fields), '{}'::jsonb)
$$;

-- The outputs a rerun item asks for, given the draft's fingerprints (p_draft), the current result's (p_current,
-- NULL when the conversation has no current result), the outputs asked for (p_fields, NULL for all) and
-- onlyChanged. NULL means all of them (a full analysis); an empty array means nothing to recompute (skipped).
-- A conversation without a current result is analyzed in full: there is nothing to carry over.
CREATE FUNCTION rerun_item_outputs(p_draft jsonb, p_current jsonb, p_fields text[], p_only_changed boolean)
RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_current IS NULL THEN NULL
        WHEN count(*) = (SELECT count(*) FROM jsonb_object_keys(p_draft)) THEN NULL
        ELSE COALESCE(array_agg(d.key ORDER BY d.key), '{}'::text[]) END
    FROM jsonb_each_text(p_draft) AS d (key, value)
    WHERE (p_fields IS NULL OR d.key = ANY(p_fields))
      AND (NOT p_only_changed OR p_current ->> d.key IS DISTINCT FROM d.value)
$$;

ALTER TABLE analysis_results
    ADD COLUMN output_sources jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(output_sources) = 'object'),
    ADD COLUMN output_fingerprints jsonb;
COMMENT ON COLUMN analysis_results.output_sources IS
    'Outputs carried over from an earlier result: output name -> id of the result whose model run produced it. '
    'An output not listed was produced by this result''s own run.';
COMMENT ON COLUMN analysis_results.output_fingerprints IS
    'Output name -> digest of the model and prompt or field definition that produced it (analysis_output_fingerprints).';

ALTER TABLE rerun_items ADD COLUMN outputs text[];
COMMENT ON COLUMN rerun_items.outputs IS 'The outputs this item asks the model for; NULL for all of them.';
ALTER TABLE rerun_jobs ADD COLUMN skipped integer NOT NULL DEFAULT 0 CHECK (skipped >= 0);
COMMENT ON COLUMN rerun_jobs.skipped IS 'Targeted conversations with nothing to recompute (onlyChanged or fields): no item.';

-- The fingerprints of a result produced by a full run: of its rerun job's snapshot, else of its version's config.
CREATE FUNCTION analysis_result_fingerprints(r analysis_results) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT analysis_output_fingerprints(
        COALESCE(
            (SELECT j.config_snapshot FROM rerun_jobs j WHERE j.job_id = r.rerun_job_id),
            (SELECT jsonb_build_object('model', v.model, 'summary_prompt', v.summary_prompt,
                                       'successful_prompt', v.successful_prompt,
                                       'user_sentiment_prompt', v.user_sentiment_prompt, 'data_fields', v.data_fields)
             FROM agent_versions v
             WHERE v.workspace_id = r.workspace_id AND v.agent_id = r.agent_id AND v.version = r.agent_version)),
        (SELECT c.kind FROM conversations c WHERE c.workspace_id = r.workspace_id AND c.conversation_id = r.conversation_id))
$$;

CREATE FUNCTION analysis_results_fingerprint() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.output_fingerprints IS NULL THEN
        NEW.output_fingerprints := analysis_result_fingerprints(NEW);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER analysis_results_fingerprint
    BEFORE INSERT ON analysis_results
    FOR EACH ROW
    EXECUTE FUNCTION analysis_results_fingerprint();

-- Results written before this migration were all produced by full runs.
UPDATE analysis_results r SET output_fingerprints = analysis_result_fingerprints(r) WHERE output_fingerprints IS NULL;

-- record_analysis_result with the provenance of a merged result; the 17-argument form records a full run.
CREATE FUNCTION record_analysis_result(
    p_workspace_id bigint, p_conversation_id text, p_trigger text, p_agent_id text, p_agent_version integer,
    p_model text, p_summary text, p_successful boolean, p_user_sentiment text, p_in_voicemail boolean,
    p_custom_data jsonb, p_input_tokens integer, p_output_tokens integer, p_cost_usd numeric, p_waived boolean,
    p_reason text, p_rerun_job_id text, p_output_sources jsonb, p_output_fingerprints jsonb
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
        user_sentiment, in_voicemail, custom_data, input_tokens, output_tokens, cost_usd, charged, is_current, rerun_job_id,
        output_sources, output_fingerprints)
    VALUES (
        p_workspace_id, p_conversation_id, p_trigger, p_agent_id, p_agent_version, p_model, p_summary, p_successful,
        p_user_sentiment, p_in_voicemail, p_custom_data, p_input_tokens, p_output_tokens, p_cost_usd, NOT p_waived,
        p_trigger <> 'PREVIEW', p_rerun_job_id, COALESCE(p_output_sources, '{}'::jsonb), p_output_fingerprints)
    RETURNING * INTO result;
    INSERT INTO charges (workspace_id, analysis_result_id, conversation_id, model, input_tokens, output_tokens,
                         amount_usd, reason, waived)
    VALUES (p_workspace_id, result.id, p_conversation_id, p_model, p_input_tokens, p_output_tokens, p_cost_usd,
            p_reason, p_waived);
    RETURN result;
END $$;

CREATE OR REPLACE FUNCTION record_analysis_result(
    p_workspace_id bigint, p_conversation_id text, p_trigger text, p_agent_id text, p_agent_version integer,
    p_model text, p_summary text, p_successful boolean, p_user_sentiment text, p_in_voicemail boolean,
    p_custom_data jsonb, p_input_tokens integer, p_output_tokens integer, p_cost_usd numeric, p_waived boolean,
    p_reason text, p_rerun_job_id text
) RETURNS analysis_results LANGUAGE sql AS $$
    SELECT record_analysis_result(
        p_workspace_id, p_conversation_id, p_trigger, p_agent_id, p_agent_version, p_model, p_summary, p_successful,
        p_user_sentiment, p_in_voicemail, p_custom_data, p_input_tokens, p_output_tokens, p_cost_usd, p_waived,
        p_reason, p_rerun_job_id, NULL::jsonb, NULL::jsonb)
$$;

-- finish_rerun_item (migration 004) for an item that asked for some outputs only (p_outputs; NULL for all): its
-- result takes the outputs asked for from this run and the others from the conversation's current result as it is
-- now (under the conversation's lock, third in the lock order), keeping their provenance. Custom data follows the
-- job's config: fields it no longer has are dropped. The required-field rule is applied over the merged fields.
CREATE FUNCTION finish_rerun_item(
    p_job_id text, p_seq integer, p_owner text, p_error text,
    p_model text, p_summary text, p_successful boolean, p_user_sentiment text, p_in_voicemail boolean,
    p_custom_data jsonb, p_input_tokens integer, p_output_tokens integer, p_cost_usd numeric, p_outputs text[]
) RETURNS rerun_jobs LANGUAGE plpgsql AS $$
DECLARE
    item rerun_items;
    job rerun_jobs;
    result analysis_results;
    cur analysis_results;
    ok boolean := p_error IS NULL;
    spent numeric := 0;
    draft jsonb;
    sources jsonb;
    fingerprints jsonb;
BEGIN
    -- The job row first (it serializes the job's commits and its cancel), then the item.
    SELECT * INTO job FROM rerun_jobs WHERE job_id = p_job_id FOR NO KEY UPDATE;
    SELECT * INTO item FROM rerun_items
    WHERE job_id = p_job_id AND seq = p_seq AND lease_owner = p_owner AND status = 'RUNNING'
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF ok AND p_outputs IS NOT NULL THEN
        PERFORM 1 FROM conversations
        WHERE workspace_id = item.workspace_id AND conversation_id = item.conversation_id
        FOR NO KEY UPDATE;
        SELECT * INTO cur FROM analysis_results
        WHERE workspace_id = item.workspace_id AND conversation_id = item.conversation_id AND is_current;
        draft := analysis_output_fingerprints(job.config_snapshot, job.kind);
        IF cur.id IS NOT NULL THEN
            IF NOT 'summary' = ANY(p_outputs) THEN p_summary := cur.summary; END IF;
            IF NOT 'successful' = ANY(p_outputs) THEN p_successful := cur.successful; END IF;
            IF NOT 'userSentiment' = ANY(p_outputs) THEN p_user_sentiment := cur.user_sentiment; END IF;
            IF NOT 'inVoicemail' = ANY(p_outputs) THEN p_in_voicemail := cur.in_voicemail; END IF;
            SELECT COALESCE(jsonb_object_agg(f ->> 'name', COALESCE(
                       CASE WHEN 'customData.' || (f ->> 'name') = ANY(p_outputs)
                            THEN p_custom_data -> (f ->> 'name')
                            ELSE cur.custom_data -> (f ->> 'name') END, 'null'::jsonb)), '{}'::jsonb)
            INTO p_custom_data
            FROM jsonb_array_elements(job.config_snapshot -> 'data_fields') AS f;
            SELECT COALESCE(jsonb_object_agg(o, COALESCE(cur.output_sources -> o, to_jsonb(cur.id))), '{}'::jsonb)
            INTO sources
            FROM jsonb_object_keys(draft) AS o
            WHERE NOT o = ANY(p_outputs);
        END IF;
        -- An output with no known definition (null) is recomputed by the next onlyChanged rerun.
        SELECT jsonb_object_agg(o, CASE WHEN o = ANY(p_outputs) THEN draft -> o
                                        ELSE COALESCE(cur.output_fingerprints -> o, 'null'::jsonb) END)
        INTO fingerprints
        FROM jsonb_object_keys(draft) AS o;
        -- A required field left empty makes the conversation unsuccessful, whichever run produced the field.
        IF EXISTS (SELECT 1 FROM jsonb_array_elements(job.config_snapshot -> 'data_fields') AS f
                   WHERE COALESCE((f ->> 'required')::boolean, false)
                     AND COALESCE(p_custom_data -> (f ->> 'name'), 'null'::jsonb) IN ('null'::jsonb, '""'::jsonb)) THEN
            p_successful := false;
        END IF;
    END IF;
    IF ok THEN
        -- A rerun is charged for every model, including those waived at the initial run.
        result := record_analysis_result(
            item.workspace_id, item.conversation_id, 'RERUN', job.agent_id, job.config_version, p_model, p_summary,
            p_successful, COALESCE(p_user_sentiment, 'UNKNOWN'), p_in_voicemail, p_custom_data, p_input_tokens,
            p_output_tokens, p_cost_usd, false, 'rerun', p_job_id, sources, fingerprints);
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

CREATE OR REPLACE FUNCTION finish_rerun_item(
    p_job_id text, p_seq integer, p_owner text, p_error text,
    p_model text, p_summary text, p_successful boolean, p_user_sentiment text, p_in_voicemail boolean,
    p_custom_data jsonb, p_input_tokens integer, p_output_tokens integer, p_cost_usd numeric
) RETURNS rerun_jobs LANGUAGE sql AS $$
    SELECT finish_rerun_item(p_job_id, p_seq, p_owner, p_error, p_model, p_summary, p_successful, p_user_sentiment,
                             p_in_voicemail, p_custom_data, p_input_tokens, p_output_tokens, p_cost_usd, NULL::text[])
$$;

-- The rerun.finished event counts the conversations skipped as well.
CREATE OR REPLACE FUNCTION rerun_finished_event(job rerun_jobs) RETURNS jsonb LANGUAGE sql STABLE AS $$
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
            'skipped', job.skipped,
            'cost_usd', job.cost_usd::text,
            'estimated_cost_usd', job.estimated_cost_usd::text,
            'config_version', job.config_version,
            'created_at', gql_instant(job.created_at),
            'started_at', gql_instant(job.started_at),
            'finished_at', gql_instant(job.finished_at),
            'impact', rerun_impact(job.job_id, NULL) - 'custom_data_changed'))
$$;
