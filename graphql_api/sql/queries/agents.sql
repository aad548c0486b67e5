-- agents_page --
-- One page of agents in creation order, after the keyset cursor (NULLs: from the start).
SELECT workspace_id, agent_id, name, channel, created_at
FROM agents
WHERE workspace_id = :workspace_id
  AND (:after_at::timestamptz IS NULL OR (created_at, agent_id) > (:after_at::timestamptz, :after_id::text))
ORDER BY created_at, agent_id
LIMIT :limit;

-- agents_by_ids --
-- Agents by id, for the agent loader.
SELECT workspace_id, agent_id, name, channel, created_at
FROM agents
WHERE workspace_id = :workspace_id AND agent_id = ANY(:agent_ids::text[]);

-- agent_versions_by_keys --
-- Agent versions by (agent id, version) pairs, for the version loader.
SELECT v.*, (NOT v.is_published) AS is_latest_draft
FROM agent_versions v
JOIN unnest(:agent_ids::text[], :versions::int[]) AS k(agent_id, version)
  ON v.agent_id = k.agent_id AND v.version = k.version
WHERE v.workspace_id = :workspace_id;

-- agent_versions_of_agents --
-- Every version of these agents, newest first.
SELECT v.*, (NOT v.is_published) AS is_latest_draft
FROM agent_versions v
WHERE v.workspace_id = :workspace_id AND v.agent_id = ANY(:agent_ids::text[])
ORDER BY v.agent_id, v.version DESC;

-- drafts_of_agents --
-- The latest draft of each of these agents.
SELECT v.*, true AS is_latest_draft
FROM agent_versions v
WHERE v.workspace_id = :workspace_id AND v.agent_id = ANY(:agent_ids::text[]) AND NOT v.is_published;

-- agent_upsert --
-- Create an agent or rename it; returns its channel so a mismatch can be refused.
INSERT INTO agents (workspace_id, agent_id, name, channel)
VALUES (:workspace_id, :agent_id, :name, :channel)
ON CONFLICT (workspace_id, agent_id) DO UPDATE SET name = EXCLUDED.name
RETURNING agent_id, channel;

-- agent_version_get --
-- One version of an agent, locked for the rest of the transaction.
SELECT v.*, (NOT v.is_published) AS is_latest_draft
FROM agent_versions v
WHERE v.workspace_id = :workspace_id AND v.agent_id = :agent_id AND v.version = :version
FOR UPDATE;

-- agent_version_insert --
-- Add a version with its analysis config.
INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, published_at, title,
                            summary_prompt, successful_prompt, user_sentiment_prompt, data_fields, model,
                            success_rubric, rationale)
VALUES (:workspace_id, :agent_id, :version, :is_published,
        CASE WHEN :is_published::boolean THEN now() END, :title,
        :summary_prompt, :successful_prompt, :user_sentiment_prompt, :data_fields::jsonb, :model,
        :success_rubric::jsonb, :rationale)
RETURNING *, (NOT is_published) AS is_latest_draft;

-- agent_draft_update --
-- Replace the analysis config of an agent's draft (never a published version).
UPDATE agent_versions
SET title = :title, summary_prompt = :summary_prompt, successful_prompt = :successful_prompt,
    user_sentiment_prompt = :user_sentiment_prompt, data_fields = :data_fields::jsonb, model = :model,
    success_rubric = :success_rubric::jsonb, rationale = :rationale, config_updated_at = clock_timestamp(), revision = revision + 1
WHERE workspace_id = :workspace_id AND agent_id = :agent_id AND version = :version AND NOT is_published
RETURNING *, true AS is_latest_draft;

-- agent_draft_publish --
-- Freeze an agent's draft.
UPDATE agent_versions SET is_published = true, published_at = clock_timestamp()
WHERE workspace_id = :workspace_id AND agent_id = :agent_id AND NOT is_published
RETURNING *, false AS is_latest_draft;

-- agent_latest_published --
-- The newest published version of an agent, if any.
SELECT v.*, false AS is_latest_draft
FROM agent_versions v
WHERE v.workspace_id = :workspace_id AND v.agent_id = :agent_id AND v.is_published
ORDER BY v.version DESC
LIMIT 1;

-- agent_draft_ensure --
-- Give an agent without a draft a new one: a copy of its latest version, numbered next.
INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, title,
                            summary_prompt, successful_prompt, user_sentiment_prompt, data_fields, model,
                            success_rubric, rationale)
SELECT v.workspace_id, v.agent_id, v.version + 1, false, NULL,
       v.summary_prompt, v.successful_prompt, v.user_sentiment_prompt, v.data_fields, v.model,
       v.success_rubric, v.rationale
FROM agent_versions v
WHERE v.workspace_id = :workspace_id AND v.agent_id = :agent_id
  AND NOT EXISTS (SELECT 1 FROM agent_versions d
                  WHERE d.workspace_id = :workspace_id AND d.agent_id = :agent_id AND NOT d.is_published)
ORDER BY v.version DESC
LIMIT 1
RETURNING *, true AS is_latest_draft;

-- agent_draft_lock --
-- An agent's draft, locked until the transaction ends (edits and publishes queue behind each other).
SELECT v.*, true AS is_latest_draft
FROM agent_versions v
WHERE v.workspace_id = :workspace_id AND v.agent_id = :agent_id AND NOT v.is_published
FOR UPDATE;

-- agent_version_change_insert --
-- Keep one edit of a draft's config.
INSERT INTO agent_version_changes (workspace_id, agent_id, version, changed_fields, before_config, after_config, origin)
VALUES (:workspace_id, :agent_id, :version, :changed_fields, :before_config::jsonb, :after_config::jsonb, :origin);

-- agent_version_changes_of --
-- The edits of these versions, newest first.
SELECT c.*
FROM agent_version_changes c
JOIN unnest(:agent_ids::text[], :versions::int[]) AS k(agent_id, version)
  ON c.agent_id = k.agent_id AND c.version = k.version
WHERE c.workspace_id = :workspace_id
ORDER BY c.agent_id, c.version, c.id DESC;
