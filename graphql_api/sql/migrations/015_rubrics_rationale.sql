-- Success rubrics and rationale (issue 13, items 1 and 2). A config may judge success on a rubric instead of the
-- plain yes/no prompt, and may ask for a rationale grounded in the transcript for its evaluated outputs. A result
-- keeps the rubric's answer (evaluation) and the rationale per output.

ALTER TABLE agent_versions
    ADD COLUMN success_rubric jsonb CHECK (success_rubric IS NULL OR jsonb_typeof(success_rubric) = 'object'),
    ADD COLUMN rationale text NOT NULL DEFAULT 'NONE' CHECK (rationale IN ('NONE', 'EVALUATIONS', 'ALL'));
COMMENT ON COLUMN agent_versions.success_rubric IS
    'How success is judged: {type, threshold, scale_min, scale_max, criteria: [{name, prompt}]}; NULL: the yes/no prompt.';
COMMENT ON COLUMN agent_versions.rationale IS
    'Which outputs come with a rationale: NONE, EVALUATIONS (successful or its criteria, sentiment) or ALL (and fields).';

ALTER TABLE analysis_results
    ADD COLUMN evaluation jsonb CHECK (evaluation IS NULL OR jsonb_typeof(evaluation) = 'object'),
    ADD COLUMN rationale jsonb CHECK (rationale IS NULL OR jsonb_typeof(rationale) = 'object');
COMMENT ON COLUMN analysis_results.evaluation IS
    'The rubric''s answer: {type, score, threshold, scale_min, scale_max, verdict | level | criteria: [{name, verdict}]}.';
COMMENT ON COLUMN analysis_results.rationale IS
    'Per output (successful, userSentiment, customData.<name>, criterion.<name>): {reason, quote, turn, quote_found}.';

-- The digests of migration 012, now also over the rubric (it decides `successful`) and the rationale setting (it
-- changes what an output's answer holds). A config without either digests exactly as before, so results written
-- before this migration are not taken for changed.
CREATE OR REPLACE FUNCTION analysis_output_fingerprints(p_config jsonb, p_kind text) RETURNS jsonb
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
    ), settings AS (
        SELECT NULLIF(p_config -> 'success_rubric', 'null'::jsonb) AS rubric,
               COALESCE(p_config ->> 'rationale', 'NONE') AS rationale
    )
    SELECT jsonb_build_object(
               'summary', md5(jsonb_build_array(p_config -> 'model', p_config -> 'summary_prompt')::text),
               'successful', md5((jsonb_build_array(
                   p_config -> 'model', p_config -> 'successful_prompt',
                   (SELECT COALESCE(jsonb_agg(def ORDER BY name), '[]'::jsonb) FROM fields
                    WHERE (def ->> 'required')::boolean))
                   || CASE WHEN s.rubric IS NOT NULL THEN jsonb_build_array(s.rubric) ELSE '[]'::jsonb END
                   || CASE WHEN s.rationale <> 'NONE' THEN '["rationale"]'::jsonb ELSE '[]'::jsonb END)::text),
               'userSentiment', md5((jsonb_build_array(p_config -> 'model', p_config -> 'user_sentiment_prompt')
                   || CASE WHEN s.rationale <> 'NONE' THEN '["rationale"]'::jsonb ELSE '[]'::jsonb END)::text))
           || CASE WHEN p_kind = 'CALL'
                   THEN jsonb_build_object('inVoicemail', md5(jsonb_build_array(p_config -> 'model')::text))
                   ELSE '{}'::jsonb END
           || COALESCE((SELECT jsonb_object_agg('customData.' || name, md5((jsonb_build_array(p_config -> 'model', def)
                            || CASE WHEN s.rationale = 'ALL' THEN '["rationale"]'::jsonb ELSE '[]'::jsonb END)::text))
                        FROM fields), '{}'::jsonb)
    FROM settings s
$$;

CREATE OR REPLACE FUNCTION analysis_result_fingerprints(r analysis_results) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT analysis_output_fingerprints(
        COALESCE(
            (SELECT j.config_snapshot FROM rerun_jobs j WHERE j.job_id = r.rerun_job_id),
            (SELECT jsonb_build_object('model', v.model, 'summary_prompt', v.summary_prompt,
                                       'successful_prompt', v.successful_prompt,
                                       'user_sentiment_prompt', v.user_sentiment_prompt, 'data_fields', v.data_fields,
                                       'success_rubric', v.success_rubric, 'rationale', v.rationale)
             FROM agent_versions v
             WHERE v.workspace_id = r.workspace_id AND v.agent_id = r.agent_id AND v.version = r.agent_version)),
        (SELECT c.kind FROM conversations c WHERE c.workspace_id = r.workspace_id AND c.conversation_id = r.conversation_id))
$$;

-- record_analysis_result with the rubric's evaluation and the rationale; the shorter forms record neither.
CREATE FUNCTION record_analysis_result(
    p_workspace_id bigint, p_conversation_id text, p_trigger text, p_agent_id text, p_agent_version integer,
    p_model text, p_summary text, p_successful boolean, p_user_sentiment text, p_in_voicemail boolean,
    p_custom_data jsonb, p_input_tokens integer, p_output_tokens integer, p_cost_usd numeric, p_waived boolean,
    p_reason text, p_rerun_job_id text, p_output_sources jsonb, p_output_fingerprints jsonb,
    p_evaluation jsonb, p_rationale jsonb
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
        output_sources, output_fingerprints, evaluation, rationale)
    VALUES (
        p_workspace_id, p_conversation_id, p_trigger, p_agent_id, p_agent_version, p_model, p_summary, p_successful,
        p_user_sentiment, p_in_voicemail, p_custom_data, p_input_tokens, p_output_tokens, p_cost_usd, NOT p_waived,
        p_trigger <> 'PREVIEW', p_rerun_job_id, COALESCE(p_output_sources, '{}'::jsonb), p_output_fingerprints,
        NULLIF(p_evaluation, 'null'::jsonb), NULLIF(p_rationale, 'null'::jsonb))
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
    p_reason text, p_rerun_job_id text, p_output_sources jsonb, p_output_fingerprints jsonb
) RETURNS analysis_results LANGUAGE sql AS $$
    SELECT record_analysis_result(
        p_workspace_id, p_conversation_id, p_trigger, p_agent_id, p_agent_version, p_model, p_summary, p_successful,
        p_user_sentiment, p_in_voicemail, p_custom_data, p_input_tokens, p_output_tokens, p_cost_usd, p_waived,
        p_reason, p_rerun_job_id, p_output_sources, p_output_fingerprints, NULL::jsonb, NULL::jsonb)
$$;

-- The output a rationale key explains: a checklist criterion's belongs to `successful`.
CREATE FUNCTION rationale_output(p_key text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_key LIKE 'criterion.%' THEN 'successful' ELSE p_key END
$$;

-- finish_rerun_item (migration 012) with the evaluation and the rationale. A narrowed item carries the current
-- result's evaluation when it did not recompute `successful`, and the rationale of the outputs it did not recompute.
CREATE FUNCTION finish_rerun_item(
    p_job_id text, p_seq integer, p_owner text, p_error text,
    p_model text, p_summary text, p_successful boolean, p_user_sentiment text, p_in_voicemail boolean,
    p_custom_data jsonb, p_input_tokens integer, p_output_tokens integer, p_cost_usd numeric, p_outputs text[],
    p_evaluation jsonb, p_rationale jsonb
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
    p_evaluation := NULLIF(p_evaluation, 'null'::jsonb);
    p_rationale := NULLIF(p_rationale, 'null'::jsonb);
    IF ok AND p_outputs IS NOT NULL THEN
        PERFORM 1 FROM conversations
        WHERE workspace_id = item.workspace_id AND conversation_id = item.conversation_id
        FOR NO KEY UPDATE;
        SELECT * INTO cur FROM analysis_results
        WHERE workspace_id = item.workspace_id AND conversation_id = item.conversation_id AND is_current;
        draft := analysis_output_fingerprints(job.config_snapshot, job.kind);
        IF cur.id IS NOT NULL THEN
            IF NOT 'summary' = ANY(p_outputs) THEN p_summary := cur.summary; END IF;
            IF NOT 'successful' = ANY(p_outputs) THEN
                p_successful := cur.successful;
                p_evaluation := cur.evaluation;
            END IF;
            IF NOT 'userSentiment' = ANY(p_outputs) THEN p_user_sentiment := cur.user_sentiment; END IF;
            IF NOT 'inVoicemail' = ANY(p_outputs) THEN p_in_voicemail := cur.in_voicemail; END IF;
            SELECT COALESCE(jsonb_object_agg(f ->> 'name', COALESCE(
                       CASE WHEN 'customData.' || (f ->> 'name') = ANY(p_outputs)
                            THEN p_custom_data -> (f ->> 'name')
                            ELSE cur.custom_data -> (f ->> 'name') END, 'null'::jsonb)), '{}'::jsonb)
            INTO p_custom_data
            FROM jsonb_array_elements(job.config_snapshot -> 'data_fields') AS f;
            SELECT NULLIF(COALESCE(jsonb_object_agg(r.key, r.value), '{}'::jsonb) || COALESCE(p_rationale, '{}'::jsonb),
                          '{}'::jsonb)
            INTO p_rationale
            FROM jsonb_each(COALESCE(cur.rationale, '{}'::jsonb)) AS r
            WHERE NOT rationale_output(r.key) = ANY(p_outputs) AND draft ? rationale_output(r.key);
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
            p_output_tokens, p_cost_usd, false, 'rerun', p_job_id, sources, fingerprints, p_evaluation, p_rationale);
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
    p_custom_data jsonb, p_input_tokens integer, p_output_tokens integer, p_cost_usd numeric, p_outputs text[]
) RETURNS rerun_jobs LANGUAGE sql AS $$
    SELECT finish_rerun_item(p_job_id, p_seq, p_owner, p_error, p_model, p_summary, p_successful, p_user_sentiment,
                             p_in_voicemail, p_custom_data, p_input_tokens, p_output_tokens, p_cost_usd, p_outputs,
                             NULL::jsonb, NULL::jsonb)
$$;

-- analysis.completed (migration 014) carries the rubric's evaluation and the rationale in this API's shape.
CREATE OR REPLACE FUNCTION analysis_event_analysis(r analysis_results) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'result_id', r.id::text,
        'agent_version', r.agent_version,
        'model', r.model,
        'summary', r.summary,
        'successful', r.successful,
        'user_sentiment', r.user_sentiment,
        'in_voicemail', r.in_voicemail,
        'custom_data', r.custom_data,
        'evaluation', r.evaluation,
        'rationale', r.rationale,
        'output_sources', r.output_sources,
        'input_tokens', r.input_tokens,
        'output_tokens', r.output_tokens,
        'cost_usd', r.cost_usd::text,
        'charged', r.charged,
        'current', r.is_current,
        'created_at', gql_instant(r.created_at))
$$;
