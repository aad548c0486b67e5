-- Workspaces, API keys, agents and their versions, conversations, analysis results and charges.
-- Every tenant-owned row carries workspace_id, and every key that points at another row includes it,
-- so a row can never reference a row of another workspace.

CREATE TABLE workspaces (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id  bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    key_hash      bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),  -- sha256 of the key; the key itself is never stored
    key_prefix    text NOT NULL,                                        -- shown in listings to tell keys apart
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

CREATE TABLE agents (
    workspace_id  bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    agent_id      text NOT NULL CHECK (agent_id ~ '^[A-Za-z0-9_-]{1,128}$'),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    channel       text NOT NULL CHECK (channel IN ('VOICE', 'CHAT')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, agent_id)
);
CREATE INDEX agents_listing ON agents (workspace_id, created_at, agent_id);

CREATE TABLE agent_versions (
    workspace_id           bigint NOT NULL,
    agent_id               text NOT NULL,
    version                integer NOT NULL CHECK (version >= 0),
    is_published           boolean NOT NULL DEFAULT false,
    title                  text,
    -- NULL prompt: the built-in default applies.
    summary_prompt         text,
    successful_prompt      text,
    user_sentiment_prompt  text,
    data_fields            jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(data_fields) = 'array'),
    model                  text NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    config_updated_at      timestamptz NOT NULL DEFAULT now(),
    published_at           timestamptz,
    PRIMARY KEY (workspace_id, agent_id, version),
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents ON DELETE CASCADE,
    CHECK (is_published = (published_at IS NOT NULL))
);
-- One draft per agent.
CREATE UNIQUE INDEX agent_versions_one_draft ON agent_versions (workspace_id, agent_id) WHERE NOT is_published;

-- Published versions are immutable, whatever path tries to change them.
CREATE FUNCTION agent_versions_published_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.is_published THEN
        RAISE EXCEPTION 'version % of agent % is published and cannot be changed', OLD.version, OLD.agent_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER agent_versions_published_immutable
    BEFORE UPDATE ON agent_versions
    FOR EACH ROW EXECUTE FUNCTION agent_versions_published_immutable();

-- The draft is always the agent's latest version (checked at commit, so publish-then-copy works).
CREATE FUNCTION agent_versions_draft_is_latest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM agent_versions d
        WHERE d.workspace_id = NEW.workspace_id AND d.agent_id = NEW.agent_id AND NOT d.is_published
          AND EXISTS (
              SELECT 1 FROM agent_versions p
              WHERE p.workspace_id = d.workspace_id AND p.agent_id = d.agent_id AND p.version > d.version)
    ) THEN
        RAISE EXCEPTION 'the draft of agent % must be its latest version', NEW.agent_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER agent_versions_draft_is_latest
    AFTER INSERT OR UPDATE ON agent_versions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION agent_versions_draft_is_latest();

-- Calls and chats share one table: analysis results and rerun items point at either.
CREATE TABLE conversations (
    workspace_id          bigint NOT NULL,
    conversation_id       text NOT NULL CHECK (conversation_id ~ '^[A-Za-z0-9_-]{1,128}$'),
    kind                  text NOT NULL CHECK (kind IN ('CALL', 'CHAT')),
    agent_id              text NOT NULL,
    agent_version         integer NOT NULL,
    conversation_type     text,            -- call_type (web_call / phone_call) or chat_type
    status                text NOT NULL,
    direction             text CHECK (direction IN ('inbound', 'outbound')),
    from_number           text,
    to_number             text,
    started_at            timestamptz,
    ended_at              timestamptz,
    duration_ms           bigint CHECK (duration_ms >= 0),
    disconnection_reason  text,
    transcript            text NOT NULL DEFAULT '',
    utterances            jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(utterances) = 'array'),  -- transcript_object or messages
    metadata              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    sort_at               timestamptz NOT NULL,  -- started_at, else first seen: the listing order
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, conversation_id),
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents ON DELETE CASCADE,
    FOREIGN KEY (workspace_id, agent_id, agent_version) REFERENCES agent_versions ON DELETE CASCADE,
    CHECK (
        (kind = 'CALL' AND status IN ('registered', 'not_connected', 'ongoing', 'ended', 'error'))
        OR (kind = 'CHAT' AND status IN ('ongoing', 'ended', 'error'))
    ),
    CHECK (ended_at IS NULL OR started_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX conversations_listing ON conversations (workspace_id, kind, sort_at DESC, conversation_id DESC);
CREATE INDEX conversations_by_agent ON conversations (workspace_id, agent_id, kind, sort_at DESC, conversation_id DESC);

CREATE TABLE analysis_results (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id     bigint NOT NULL,
    conversation_id  text NOT NULL,
    trigger          text NOT NULL CHECK (trigger IN ('INITIAL', 'RERUN', 'PREVIEW')),
    agent_id         text NOT NULL,
    agent_version    integer NOT NULL,   -- the version whose config produced this result
    model            text NOT NULL,
    summary          text,
    successful       boolean,
    user_sentiment   text NOT NULL DEFAULT 'UNKNOWN' CHECK (user_sentiment IN ('NEGATIVE', 'NEUTRAL', 'POSITIVE', 'UNKNOWN')),
    in_voicemail     boolean,
    custom_data      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom_data) = 'object'),
    input_tokens     integer NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens    integer NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cost_usd         numeric(16, 8) NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    charged          boolean NOT NULL,
    is_current       boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (workspace_id, conversation_id) REFERENCES conversations ON DELETE CASCADE,
    FOREIGN KEY (workspace_id, agent_id, agent_version) REFERENCES agent_versions ON DELETE CASCADE,
    CHECK (NOT (is_current AND trigger = 'PREVIEW'))
);
-- At most one current result per conversation: the newest completed one.
CREATE UNIQUE INDEX analysis_results_one_current ON analysis_results (workspace_id, conversation_id) WHERE is_current;
CREATE INDEX analysis_results_history ON analysis_results (workspace_id, conversation_id, id DESC);
-- The initial analysis runs once per conversation, however many imports race.
CREATE UNIQUE INDEX analysis_results_one_initial ON analysis_results (workspace_id, conversation_id) WHERE trigger = 'INITIAL';

-- One line per model invocation, waived or not.
CREATE TABLE charges (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id        bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    analysis_result_id  bigint NOT NULL UNIQUE REFERENCES analysis_results (id) ON DELETE CASCADE,
    model               text NOT NULL,
    input_tokens        integer NOT NULL CHECK (input_tokens >= 0),
    output_tokens       integer NOT NULL CHECK (output_tokens >= 0),
    amount_usd          numeric(16, 8) NOT NULL CHECK (amount_usd >= 0),
    reason              text NOT NULL CHECK (reason IN ('initial', 'rerun', 'preview')),
    waived              boolean NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX charges_by_workspace ON charges (workspace_id, created_at);
