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

-- conversation_lock --
-- Serialize result writers of one conversation so exactly one result is current.
SELECT conversation_id FROM conversations
WHERE workspace_id = :workspace_id AND conversation_id = :conversation_id
FOR UPDATE;

-- analysis_retire_current --
-- The current result becomes history.
UPDATE analysis_results SET is_current = false
WHERE workspace_id = :workspace_id AND conversation_id = :conversation_id AND is_current;

-- analysis_insert --
-- Store one analysis run.
INSERT INTO analysis_results (
    workspace_id, conversation_id, trigger, agent_id, agent_version, model, summary, successful,
    user_sentiment, in_voicemail, custom_data, input_tokens, output_tokens, cost_usd, charged, is_current)
VALUES (
    :workspace_id, :conversation_id, :trigger, :agent_id, :agent_version, :model, :summary, :successful,
    :user_sentiment, :in_voicemail, :custom_data::jsonb, :input_tokens, :output_tokens, :cost_usd, :charged, :is_current)
RETURNING *;

-- charge_insert --
-- The charge line of one analysis run, waived or not.
INSERT INTO charges (workspace_id, analysis_result_id, model, input_tokens, output_tokens, amount_usd, reason, waived)
VALUES (:workspace_id, :analysis_result_id, :model, :input_tokens, :output_tokens, :amount_usd, :reason, :waived)
RETURNING id;

-- has_initial_analysis --
-- Whether a conversation already has its initial analysis (imports stay idempotent).
SELECT EXISTS (
    SELECT 1 FROM analysis_results
    WHERE workspace_id = :workspace_id AND conversation_id = :conversation_id AND trigger = 'INITIAL');
