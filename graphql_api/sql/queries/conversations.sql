-- conversations_selected --
-- The conversations a selection (graphql_api.conversations.Selection) takes, each with its current analysis r:
-- the one definition of the filter, a fragment written into a page and into a rerun's targets as
-- {{conversations_selected}}. A NULL filter parameter means "no condition".
FROM conversations c
LEFT JOIN analysis_results r
       ON r.workspace_id = c.workspace_id AND r.conversation_id = c.conversation_id AND r.is_current
WHERE c.workspace_id = :workspace_id
  AND c.kind = :kind
  AND (:agent_id::text IS NULL OR c.agent_id = :agent_id::text)
  AND (:versions::int[] IS NULL OR c.agent_version = ANY(:versions::int[]))
  AND (:started_from::timestamptz IS NULL OR c.started_at >= :started_from::timestamptz)
  AND (:started_to::timestamptz IS NULL OR c.started_at < :started_to::timestamptz)
  AND (:statuses::text[] IS NULL OR c.status = ANY(:statuses::text[]))
  AND (:successful::boolean IS NULL OR r.successful = :successful::boolean)
  AND (:sentiments::text[] IS NULL OR r.user_sentiment = ANY(:sentiments::text[]));

-- conversations_page --
-- One page of calls or chats, newest first, with their current analysis, after the keyset cursor.
SELECT c.workspace_id, c.conversation_id, c.kind, c.agent_id, c.agent_version, c.conversation_type,
       c.status, c.direction, c.from_number, c.to_number, c.started_at, c.ended_at, c.duration_ms,
       c.disconnection_reason, c.transcript, c.utterances, c.metadata, c.sort_at,
       r.id AS r_id, r.trigger AS r_trigger, r.agent_id AS r_agent_id, r.agent_version AS r_agent_version,
       r.model AS r_model, r.summary AS r_summary, r.successful AS r_successful,
       r.user_sentiment AS r_user_sentiment, r.in_voicemail AS r_in_voicemail, r.custom_data AS r_custom_data,
       r.input_tokens AS r_input_tokens, r.output_tokens AS r_output_tokens, r.cost_usd AS r_cost_usd,
       r.charged AS r_charged, r.created_at AS r_created_at, r.conversation_id AS r_conversation_id,
       r.output_sources AS r_output_sources, r.output_fingerprints AS r_output_fingerprints,
       r.evaluation AS r_evaluation, r.rationale AS r_rationale
{{conversations_selected}}
  AND (:after_at::timestamptz IS NULL OR (c.sort_at, c.conversation_id) < (:after_at::timestamptz, :after_id::text))
ORDER BY c.sort_at DESC, c.conversation_id DESC
LIMIT :limit;

-- conversations_by_ids --
-- Calls or chats by id, for the conversation loader.
SELECT c.workspace_id, c.conversation_id, c.kind, c.agent_id, c.agent_version, c.conversation_type,
       c.status, c.direction, c.from_number, c.to_number, c.started_at, c.ended_at, c.duration_ms,
       c.disconnection_reason, c.transcript, c.utterances, c.metadata, c.sort_at
FROM conversations c
WHERE c.workspace_id = :workspace_id AND c.conversation_id = ANY(:conversation_ids::text[]);

-- conversation_upsert --
-- Insert or refresh a call or chat by id; no row comes back when the id belongs to the other kind.
INSERT INTO conversations (
    workspace_id, conversation_id, kind, agent_id, agent_version, conversation_type, status, direction,
    from_number, to_number, started_at, ended_at, duration_ms, disconnection_reason, transcript,
    utterances, metadata, sort_at)
VALUES (
    :workspace_id, :conversation_id, :kind, :agent_id, :agent_version, :conversation_type, :status, :direction,
    :from_number, :to_number, :started_at, :ended_at, :duration_ms, :disconnection_reason, :transcript,
    :utterances::jsonb, :metadata::jsonb, COALESCE(:started_at::timestamptz, now()))
ON CONFLICT (workspace_id, conversation_id) DO UPDATE SET
    agent_id = EXCLUDED.agent_id, agent_version = EXCLUDED.agent_version,
    conversation_type = EXCLUDED.conversation_type, status = EXCLUDED.status, direction = EXCLUDED.direction,
    from_number = EXCLUDED.from_number, to_number = EXCLUDED.to_number, started_at = EXCLUDED.started_at,
    ended_at = EXCLUDED.ended_at, duration_ms = EXCLUDED.duration_ms,
    disconnection_reason = EXCLUDED.disconnection_reason, transcript = EXCLUDED.transcript,
    utterances = EXCLUDED.utterances, metadata = EXCLUDED.metadata,
    sort_at = COALESCE(EXCLUDED.started_at, conversations.sort_at), updated_at = now()
WHERE conversations.kind = EXCLUDED.kind
RETURNING conversation_id, (xmax = 0) AS inserted;
