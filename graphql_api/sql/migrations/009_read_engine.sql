-- The read engine (graphql_api/schema/compiler.py) builds a query's JSON in PostgreSQL. Two things it needs:

-- 1. Values formatted exactly as the resolvers format them, so that both paths answer byte for byte alike.
-- An instant as Python's datetime.isoformat() writes a UTC one: microseconds only when not zero.
-- STABLE (to_char is), so the planner inlines it.
CREATE FUNCTION gql_instant(t timestamptz) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN date_part('microseconds', t)::int % 1000000 = 0 THEN ''
                ELSE '.' || to_char(t AT TIME ZONE 'UTC', 'US') END
        || '+00:00'
$$;

-- A keyset cursor: unpadded URL-safe base64 of the compact JSON [tag, instant, id]
-- (graphql_api.schema.pagination.encode_cursor).
CREATE FUNCTION gql_cursor(tag text, at timestamptz, ident text) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT rtrim(translate(encode(convert_to(
        '["' || tag || '","' || gql_instant(at) || '",' || to_json(ident)::text || ']', 'UTF8'), 'base64'),
        E'+/\n', '-_'), '=')
$$;

-- A position cursor: the same of [tag, position] (encode_position).
CREATE FUNCTION gql_position_cursor(tag text, pos integer) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT rtrim(translate(encode(convert_to('["' || tag || '",' || pos::text || ']', 'UTF8'), 'base64'),
        E'+/\n', '-_'), '=')
$$;

-- 2. Filtered pages that read about as many rows as they return. A page is walked newest first along an
-- index; a filter on the current analysis (successful, sentiment) had to look up each scanned call's result,
-- and a filter on an old version scanned every newer call first. The current result's successful and
-- sentiment now sit on the conversation (kept by a trigger where results are written), and versions,
-- successful and sentiment each have an index in listing order.
ALTER TABLE conversations
    ADD COLUMN current_successful boolean,
    ADD COLUMN current_sentiment text;

-- record_analysis_result() locks the conversation FOR NO KEY UPDATE and takes the old result off current
-- before it inserts the new current one, so this update follows the global lock order (docs/architecture.md).
CREATE FUNCTION conversations_follow_current_result() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE conversations
    SET current_successful = NEW.successful, current_sentiment = NEW.user_sentiment
    WHERE workspace_id = NEW.workspace_id AND conversation_id = NEW.conversation_id
      AND (current_successful IS DISTINCT FROM NEW.successful OR current_sentiment IS DISTINCT FROM NEW.user_sentiment);
    RETURN NULL;
END $$;

CREATE TRIGGER analysis_results_current_on_conversation
    AFTER INSERT ON analysis_results
    FOR EACH ROW WHEN (NEW.is_current)
    EXECUTE FUNCTION conversations_follow_current_result();

UPDATE conversations c
SET current_successful = r.successful, current_sentiment = r.user_sentiment
FROM analysis_results r
WHERE r.workspace_id = c.workspace_id AND r.conversation_id = c.conversation_id AND r.is_current;

CREATE INDEX conversations_by_version
    ON conversations (workspace_id, kind, agent_version, sort_at DESC, conversation_id DESC);
CREATE INDEX conversations_by_agent_version
    ON conversations (workspace_id, agent_id, kind, agent_version, sort_at DESC, conversation_id DESC);
CREATE INDEX conversations_by_successful
    ON conversations (workspace_id, kind, current_successful, sort_at DESC, conversation_id DESC);
CREATE INDEX conversations_by_sentiment
    ON conversations (workspace_id, kind, current_sentiment, sort_at DESC, conversation_id DESC);
