-- workspace_ensure --
-- Create the workspace when missing; return it either way.
WITH inserted AS (
    INSERT INTO workspaces (name) VALUES (:name)
    ON CONFLICT (name) DO NOTHING
    RETURNING id, name, created_at
)
SELECT id, name, created_at FROM inserted
UNION ALL
SELECT id, name, created_at FROM workspaces WHERE name = :name
LIMIT 1;

-- api_key_insert --
-- Record a new API key by its hash.
INSERT INTO api_keys (workspace_id, key_hash, key_prefix)
VALUES (:workspace_id, :key_hash, :key_prefix)
RETURNING id, created_at;

-- api_keys_by_prefix --
-- The unrevoked keys sharing this public prefix (almost always one), with their hashes and workspaces.
SELECT k.id AS key_id, k.key_hash, w.id, w.name
FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id
WHERE k.key_prefix = :key_prefix AND k.revoked_at IS NULL;

-- workspace_is_empty --
-- True when the workspace has no agents yet.
SELECT NOT EXISTS (SELECT 1 FROM agents WHERE workspace_id = :workspace_id);

-- api_keys_matching --
-- The keys (revoked or not) with this public prefix, and with this hash when the whole key is given.
SELECT k.id, k.key_prefix, k.created_at, k.revoked_at, w.name AS workspace
FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id
WHERE k.key_prefix = :key_prefix AND (:key_hash::bytea IS NULL OR k.key_hash = :key_hash::bytea)
ORDER BY k.created_at, k.id;

-- api_key_revoke --
-- Revoke one key; its trigger tells every server process (migration 007).
UPDATE api_keys SET revoked_at = now()
WHERE id = :key_id AND revoked_at IS NULL
RETURNING id, key_prefix, created_at, revoked_at;

-- api_keys_list --
-- Every key, or those of one workspace, oldest first: never the hash.
SELECT k.id, k.key_prefix, k.created_at, k.revoked_at, w.name AS workspace
FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id
WHERE :workspace::text IS NULL OR w.name = :workspace::text
ORDER BY w.name, k.created_at, k.id;

-- api_keys_not_live --
-- Which of these key ids are revoked or gone: the safety net for a revocation notice that was lost.
SELECT t.key_id FROM unnest(:key_ids::bigint[]) AS t (key_id)
WHERE NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.id = t.key_id AND k.revoked_at IS NULL);
