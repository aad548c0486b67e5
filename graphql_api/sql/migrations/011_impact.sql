-- Impact of new results over the ones they replace (issue 12, item 3): one definition for a rerun job's
-- RerunJob.impact, a sample preview's summary and the rerun.finished webhook, so all three agree.

-- Pairs of (previous result, new result) given as two parallel arrays; a NULL previous id is a conversation that
-- had no result to compare with. Outcomes flip only where a previous result exists; sentiment changes only
-- between two known sentiments; a custom data field changed where its value differs (a missing key is null).
CREATE FUNCTION analysis_impact(p_previous_ids bigint[], p_result_ids bigint[]) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH pairs AS (
        SELECT prev.id IS NOT NULL AS compared, cur.successful, prev.successful AS prev_successful,
               cur.user_sentiment, prev.user_sentiment AS prev_sentiment,
               cur.custom_data, prev.custom_data AS prev_custom_data
        FROM unnest(p_previous_ids, p_result_ids) AS p (previous_id, result_id)
        JOIN analysis_results cur ON cur.id = p.result_id
        LEFT JOIN analysis_results prev ON prev.id = p.previous_id
    )
    SELECT jsonb_build_object(
        'compared', count(*) FILTER (WHERE compared),
        'without_previous_result', count(*) FILTER (WHERE NOT compared),
        'flipped_to_successful', count(*) FILTER (WHERE compared AND successful AND prev_successful IS NOT TRUE),
        'flipped_to_unsuccessful', count(*) FILTER (WHERE compared AND prev_successful AND successful IS NOT TRUE),
        'sentiment_changed', count(*) FILTER (WHERE compared AND user_sentiment <> prev_sentiment),
        'custom_data_changed', COALESCE((
            SELECT jsonb_agg(jsonb_build_object('name', f.name, 'changed', f.changed) ORDER BY f.name)
            FROM (
                SELECT k.name, count(*) FILTER (WHERE q.custom_data -> k.name IS DISTINCT FROM q.prev_custom_data -> k.name)
                       AS changed
                FROM pairs q
                CROSS JOIN LATERAL (
                    SELECT jsonb_object_keys(CASE WHEN jsonb_typeof(q.custom_data) = 'object' THEN q.custom_data END)
                    UNION
                    SELECT jsonb_object_keys(CASE WHEN jsonb_typeof(q.prev_custom_data) = 'object' THEN q.prev_custom_data END)
                ) AS k (name)
                WHERE q.compared
                GROUP BY k.name
            ) AS f), '[]'::jsonb))
    FROM pairs
$$;

-- A job's impact over its SUCCEEDED items; with p_upto, only those among the first p_upto items to finish (the
-- job row's succeeded + failed), so the impact read with a job row matches that row's counters.
CREATE FUNCTION rerun_impact(p_job_id text, p_upto integer) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT analysis_impact(array_agg(i.previous_result_id ORDER BY i.finish_index),
                           array_agg(i.result_id ORDER BY i.finish_index))
    FROM rerun_items i
    WHERE i.job_id = p_job_id AND i.status = 'SUCCEEDED' AND (p_upto IS NULL OR i.finish_index <= p_upto)
$$;

-- The webhook's impact from the same definition; its payload keeps the keys it had.
CREATE OR REPLACE FUNCTION rerun_finished_event(job rerun_jobs) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'type', 'rerun.finished',
        'timestamp', gql_instant(COALESCE(job.finished_at, job.updated_at)),
        'data', jsonb_build_object(
            'rerun', true,
            'job_id', job.job_id,
            'agent_id', job.agent_id,
            'kind', job.kind,
            'status', job.status,
            'total', job.total,
            'succeeded', job.succeeded,
            'failed', job.failed,
            'canceled', job.canceled,
            'cost_usd', job.cost_usd::text,
            'estimated_cost_usd', job.estimated_cost_usd::text,
            'config_version', job.config_version,
            'created_at', gql_instant(job.created_at),
            'started_at', gql_instant(job.started_at),
            'finished_at', gql_instant(job.finished_at),
            'impact', rerun_impact(job.job_id, NULL) - 'custom_data_changed'))
$$;
