-- analysis.completed events (issue 13, item 3). Every analysis result that commits (initial, rerun, preview) tells
-- the processes listening on 'analysis_completed' (the analysisCompleted subscription) and, in the same transaction,
-- writes one delivery per enabled webhook endpoint of the workspace that takes the event, in the endpoint's payload
-- format: this API's shape, or Retell's call_analyzed / chat_analyzed. Previews only go to endpoints that ask.

-- An endpoint takes analysis.completed only when asked: endpoints made before this migration keep rerun.finished.
ALTER TABLE webhook_endpoints DROP CONSTRAINT webhook_endpoints_event_types_check;
ALTER TABLE webhook_endpoints
    ADD CONSTRAINT webhook_endpoints_event_types_check
        CHECK (cardinality(event_types) > 0 AND event_types <@ '{rerun.finished,analysis.completed}'),
    ADD COLUMN payload_format text NOT NULL DEFAULT 'API' CHECK (payload_format IN ('API', 'RETELL')),
    ADD COLUMN include_previews boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN webhook_endpoints.payload_format IS
    'The body of analysis.completed: API (this API''s shape) or RETELL (Retell''s call_analyzed / chat_analyzed). '
    'rerun.finished is always in the API shape.';
COMMENT ON COLUMN webhook_endpoints.include_previews IS 'analysis.completed is sent for PREVIEW results too.';

-- Delivery loops claim each endpoint's oldest due deliveries, so that one endpoint's backlog can't hold up another's
-- (webhook_deliveries_claim): the pending ones by endpoint, instead of all of them by due time.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE status = 'PENDING';
DROP INDEX webhook_deliveries_due;

-- The payload is built in SQL, one function per part, so a new result column goes in one place. The parts are plain
-- SQL functions PostgreSQL inlines, except the Retell one: its sub-select would keep it from being inlined, and a SQL
-- function that is not inlined is planned again at every call; PL/pgSQL keeps its plan for the session.

-- A result as the API names it (cost as an exact decimal string, ids as strings).
CREATE FUNCTION analysis_event_analysis(r analysis_results) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'result_id', r.id::text,
        'agent_version', r.agent_version,
        'model', r.model,
        'summary', r.summary,
        'successful', r.successful,
        'user_sentiment', r.user_sentiment,
        'in_voicemail', r.in_voicemail,
        'custom_data', r.custom_data,
        'output_sources', r.output_sources,
        'input_tokens', r.input_tokens,
        'output_tokens', r.output_tokens,
        'cost_usd', r.cost_usd::text,
        'charged', r.charged,
        'current', r.is_current,
        'created_at', gql_instant(r.created_at))
$$;

-- The call or chat a result is about, as the API names it.
CREATE FUNCTION analysis_event_conversation(c conversations) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', c.conversation_id,
        'kind', c.kind,
        'agent_id', c.agent_id,
        'agent_version', c.agent_version,
        'type', c.conversation_type,
        'status', c.status,
        'direction', c.direction,
        'from_number', c.from_number,
        'to_number', c.to_number,
        'started_at', gql_instant(c.started_at),
        'ended_at', gql_instant(c.ended_at),
        'duration_ms', c.duration_ms,
        'disconnection_reason', c.disconnection_reason,
        'transcript', c.transcript,
        'metadata', c.metadata)
$$;

-- Milliseconds since the epoch, as Retell sends its timestamps.
CREATE FUNCTION retell_ms(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT round(extract(epoch FROM t) * 1000)::bigint
$$;

-- Which run produced a result: the extra top-level key of the Retell shape (a Retell consumer ignores it).
CREATE FUNCTION analysis_event_run(r analysis_results) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'result_id', r.id::text,
        'trigger', r.trigger,
        'rerun_job_id', r.rerun_job_id,
        'agent_version', r.agent_version,
        'model', r.model,
        'created_at', gql_instant(r.created_at))
$$;

-- Retell's webhook body for an analyzed call or chat: {event, call} or {event, chat}, the conversation in Retell's
-- field names with its analysis (sentiment as Retell writes it: Positive, Negative, Neutral, Unknown). Top-level
-- fields without a value are left out, as Retell leaves out what a call does not have; utterances of a call always
-- have `words`, as in Retell's transcript_object.
CREATE FUNCTION analysis_event_retell(r analysis_results, c conversations) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN CASE WHEN c.kind = 'CALL' THEN jsonb_build_object(
        'event', 'call_analyzed',
        'call', jsonb_strip_nulls(jsonb_build_object(
                    'call_id', c.conversation_id,
                    'agent_id', c.agent_id,
                    'agent_version', c.agent_version,
                    'call_type', c.conversation_type,
                    'call_status', c.status,
                    'direction', c.direction,
                    'from_number', c.from_number,
                    'to_number', c.to_number,
                    'start_timestamp', retell_ms(c.started_at),
                    'end_timestamp', retell_ms(c.ended_at),
                    'duration_ms', c.duration_ms,
                    'disconnection_reason', c.disconnection_reason,
                    'transcript', c.transcript))
                || jsonb_build_object(
                    'transcript_object', (
                        SELECT COALESCE(jsonb_agg(CASE WHEN jsonb_typeof(u -> 'words') = 'array' THEN u
                                                       ELSE u || '{"words": []}'::jsonb END ORDER BY n), '[]'::jsonb)
                        FROM jsonb_array_elements(c.utterances) WITH ORDINALITY AS t (u, n)),
                    'metadata', c.metadata,
                    'call_analysis', jsonb_build_object(
                        'call_summary', r.summary,
                        'in_voicemail', r.in_voicemail,
                        'user_sentiment', initcap(r.user_sentiment),
                        'call_successful', r.successful,
                        'custom_analysis_data', r.custom_data)))
    ELSE jsonb_build_object(
        'event', 'chat_analyzed',
        'chat', jsonb_strip_nulls(jsonb_build_object(
                    'chat_id', c.conversation_id,
                    'agent_id', c.agent_id,
                    'version', c.agent_version,
                    'chat_type', c.conversation_type,
                    'chat_status', c.status,
                    'start_timestamp', retell_ms(c.started_at),
                    'end_timestamp', retell_ms(c.ended_at),
                    'transcript', c.transcript))
                || jsonb_build_object(
                    'message_with_tool_calls', c.utterances,
                    'metadata', c.metadata,
                    'chat_analysis', jsonb_build_object(
                        'chat_summary', r.summary,
                        'user_sentiment', initcap(r.user_sentiment),
                        'chat_successful', r.successful,
                        'custom_analysis_data', r.custom_data)))
    END || jsonb_build_object('analysis_run', analysis_event_run(r));
END $$;

-- The body of one analysis.completed delivery in a payload format.
CREATE FUNCTION analysis_completed_event(r analysis_results, c conversations, p_format text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE p_format
        WHEN 'RETELL' THEN analysis_event_retell(r, c)
        ELSE jsonb_build_object(
            'type', 'analysis.completed',
            'timestamp', gql_instant(r.created_at),
            'data', jsonb_build_object(
                'trigger', r.trigger,
                'rerun_job_id', r.rerun_job_id,
                'conversation', analysis_event_conversation(c),
                'analysis', analysis_event_analysis(r)))
    END
$$;

-- An analysis.completed delivery names its result. Its body is built when it is first sent (the delivery loop's claim)
-- from the result, which never changes, and its conversation as it is then, and kept for the retries. That keeps the
-- body's work, and a body as large as a transcript, out of the transaction that writes the result: a rerun commits
-- its items one after another (they take the job's row, migration 004), so whatever one commit costs, the rerun pays
-- for every item. No foreign key: a delivery outlives its result, as it does its job.
ALTER TABLE webhook_deliveries
    ADD COLUMN analysis_result_id bigint,
    ALTER COLUMN payload DROP NOT NULL,
    ADD CONSTRAINT webhook_deliveries_payload_or_result CHECK (payload IS NOT NULL OR analysis_result_id IS NOT NULL);

-- The body of an analysis.completed delivery of a result in a format; NULL when the result no longer exists.
-- PL/pgSQL: its statement is planned once per session, not at every delivery.
CREATE FUNCTION analysis_delivery_payload(p_result_id bigint, p_format text) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT analysis_completed_event(r, c, p_format)
            FROM analysis_results r
            JOIN conversations c ON c.workspace_id = r.workspace_id AND c.conversation_id = r.conversation_id
            WHERE r.id = p_result_id);
END $$;

-- A notification for the analysisCompleted subscription (small: subscribers read the row), then one outbox row per
-- endpoint taking the event. It only reads and inserts: no row lock is waited for, so the lock order of migration 004
-- is kept. With no endpoint taking the event, the insert's one probe of the enabled-endpoints index finds nothing.
CREATE FUNCTION analysis_results_completed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    deliveries integer;
BEGIN
    INSERT INTO webhook_deliveries (workspace_id, endpoint_id, event_type, webhook_id, job_id, analysis_result_id,
                                    next_attempt_at)
    SELECT NEW.workspace_id, e.id, 'analysis.completed', 'msg_' || replace(gen_random_uuid()::text, '-', ''),
           NEW.rerun_job_id, NEW.id, clock_timestamp()
    FROM webhook_endpoints e
    WHERE e.workspace_id = NEW.workspace_id AND e.enabled AND 'analysis.completed' = ANY(e.event_types)
      AND (NEW.trigger <> 'PREVIEW' OR e.include_previews)
    ORDER BY e.id;
    GET DIAGNOSTICS deliveries = ROW_COUNT;
    -- 'd': how many deliveries it made due, so a delivery loop wakes only when there is something to send.
    PERFORM pg_notify('analysis_completed', json_build_object(
        'w', NEW.workspace_id, 'a', NEW.agent_id, 'r', NEW.id, 't', NEW.trigger, 'd', deliveries)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER analysis_results_completed
    AFTER INSERT ON analysis_results
    FOR EACH ROW
    EXECUTE FUNCTION analysis_results_completed();
