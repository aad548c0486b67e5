-- current_analysis_of --
-- The current analysis result of each of these conversations.
SELECT r.*
FROM analysis_results r
WHERE r.workspace_id = :workspace_id AND r.conversation_id = ANY(:conversation_ids::text[]) AND r.is_current;

-- analysis_history_of --
-- Every earlier (not current) result of these conversations, newest first.
SELECT r.*
FROM analysis_results r
WHERE r.workspace_id = :workspace_id AND r.conversation_id = ANY(:conversation_ids::text[]) AND NOT r.is_current
ORDER BY r.conversation_id, r.id DESC;

-- analysis_record --
-- Store one analysis run with its charge line, making it current unless a preview (see record_analysis_result).
-- (FROM, not `SELECT (f()).*`, which would call the function once per column.)
SELECT * FROM record_analysis_result(:workspace_id, :conversation_id, :trigger, :agent_id, :agent_version, :model,
                                     :summary, :successful, :user_sentiment, :in_voicemail, :custom_data::jsonb,
                                     :input_tokens, :output_tokens, :cost_usd, :waived, :reason, :rerun_job_id::text,
                                     NULL::jsonb, NULL::jsonb, :evaluation::jsonb, :rationale::jsonb);

-- has_initial_analysis --
-- Whether a conversation already has its initial analysis (imports stay idempotent).
SELECT EXISTS (
    SELECT 1 FROM analysis_results
    WHERE workspace_id = :workspace_id AND conversation_id = :conversation_id AND trigger = 'INITIAL');

-- charge_failed_run --
-- The charge line of a run whose model answered but whose answer was unusable (no result is stored).
INSERT INTO charges (workspace_id, analysis_result_id, conversation_id, model, input_tokens, output_tokens, amount_usd,
                     reason, waived, error)
VALUES (:workspace_id, NULL, :conversation_id, :model, :input_tokens, :output_tokens, :cost_usd, :reason, :waived, :error);

-- preview_sample --
-- Up to :size conversations a sample preview takes (a rerun's targets), in an order drawn from :seed (the same
-- seed over the same conversations picks the same ones), with their current result and how many matched.
SELECT c.workspace_id, c.conversation_id, c.kind, c.agent_id, c.agent_version, c.status, c.transcript,
       c.utterances, c.disconnection_reason, r.id AS current_result_id, count(*) OVER ()::int AS matched
{{rerun_targets}}
ORDER BY md5(:seed::int::text || '/' || c.conversation_id), c.conversation_id
LIMIT :size;

-- analysis_impact_of --
-- The impact of these results over the ones they replace (parallel arrays; see analysis_impact, migration 011).
SELECT analysis_impact(:previous_ids::bigint[], :result_ids::bigint[]) AS impact;
