-- export_result_columns --
-- A result r's columns in an export (a fragment; graphql_api/export.py names them in RESULT_COLUMNS, in this order).
r.id::text AS result_id, r.trigger, r.model, r.agent_version AS result_agent_version, r.summary, r.successful,
r.user_sentiment, r.in_voicemail, r.input_tokens, r.output_tokens, r.cost_usd, r.charged,
r.created_at AS result_created_at, (r.evaluation ->> 'score')::float8 AS evaluation_score, r.evaluation, r.rationale,
r.custom_data

-- export_conversation_columns --
-- A conversation c's columns in an export (a fragment; CONVERSATION_COLUMNS), statuses named as the API names them.
c.conversation_id, c.kind, c.agent_id, c.agent_version, upper(c.status) AS status, c.started_at, c.ended_at,
c.duration_ms

-- export_agent_fields --
-- The custom data fields an export of an agent's results has a column for: those of every version of the agent and
-- of every rerun job's config snapshot, each named once, where its newest config has it: the latest version's fields
-- in their order first, then those only older configs had.
SELECT name
FROM (
    SELECT DISTINCT ON (f.def ->> 'name') f.def ->> 'name' AS name, s.version, s.source, s.at, f.ord
    FROM (
        SELECT v.data_fields AS fields, v.version, 0 AS source, v.created_at AS at
        FROM agent_versions v
        WHERE v.workspace_id = :workspace_id AND v.agent_id = :agent_id
        UNION ALL
        SELECT j.config_snapshot -> 'data_fields', j.config_version, 1, j.created_at
        FROM rerun_jobs j
        WHERE j.workspace_id = :workspace_id AND j.agent_id = :agent_id
    ) s
    CROSS JOIN LATERAL jsonb_array_elements(COALESCE(s.fields, '[]'::jsonb)) WITH ORDINALITY AS f (def, ord)
    WHERE f.def ->> 'name' IS NOT NULL
    ORDER BY f.def ->> 'name', s.version DESC, s.source, s.at DESC, f.ord
) newest
ORDER BY version DESC, source, at DESC, ord;

-- export_results_page --
-- One page of an export of current results: the conversations a selection takes (conversations_selected), newest
-- first as a page of calls or chats lists them, each with its current result (none: empty), after the keyset cursor.
-- The cursor is never NULL (the first page starts after 'infinity'), so that even a generic plan walks the index from
-- it rather than from the start at every page.
SELECT {{export_conversation_columns}}, c.sort_at,
       {{export_result_columns}}
{{conversations_selected}}
  AND (c.sort_at, c.conversation_id) < (:after_at::timestamptz, :after_id::text)
ORDER BY c.sort_at DESC, c.conversation_id DESC
LIMIT :limit;

-- export_job_items_page --
-- One page of an export of a rerun job: its items in job order after a position, each with its conversation, the
-- result the item produced (none while pending, or when it failed) and the result that was current before it.
SELECT i.seq, i.status AS item_status, i.error,
       {{export_conversation_columns}},
       {{export_result_columns}},
       p.id::text AS previous_result_id, p.trigger AS previous_trigger, p.agent_version AS previous_agent_version,
       p.summary AS previous_summary, p.successful AS previous_successful, p.user_sentiment AS previous_user_sentiment,
       p.in_voicemail AS previous_in_voicemail, p.custom_data AS previous_custom_data
FROM rerun_items i
JOIN conversations c ON c.workspace_id = i.workspace_id AND c.conversation_id = i.conversation_id
LEFT JOIN analysis_results r ON r.id = i.result_id AND r.workspace_id = i.workspace_id
LEFT JOIN analysis_results p ON p.id = i.previous_result_id AND p.workspace_id = i.workspace_id
WHERE i.workspace_id = :workspace_id AND i.job_id = :job_id AND i.seq > :after_seq
ORDER BY i.seq
LIMIT :limit;
