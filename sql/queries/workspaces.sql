-- workspace_by_name --
-- The workspace with this name, if any.
SELECT id, name, created_at FROM workspaces WHERE name = :name;

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
