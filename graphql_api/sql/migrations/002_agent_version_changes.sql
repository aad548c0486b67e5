-- Every edit of a draft's analysis config, kept with the config before and after.
CREATE TABLE agent_version_changes (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id   bigint NOT NULL,
    agent_id       text NOT NULL,
    version        integer NOT NULL,
    changed_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    changed_fields text[] NOT NULL,
    before_config  jsonb NOT NULL,
    after_config   jsonb NOT NULL,
    FOREIGN KEY (workspace_id, agent_id, version) REFERENCES agent_versions ON DELETE CASCADE
);
CREATE INDEX agent_version_changes_by_version ON agent_version_changes (workspace_id, agent_id, version, id DESC);
