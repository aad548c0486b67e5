-- webhook_endpoint_insert --
-- A new endpoint of this workspace.
INSERT INTO webhook_endpoints (id, workspace_id, url, description, event_types, secret, payload_format, include_previews)
VALUES (:id, :workspace_id, :url, :description, :event_types::text[], :secret, :payload_format, :include_previews)
RETURNING *;

-- webhook_endpoint_update --
-- Change what an endpoint of this workspace is sent; a NULL argument keeps the setting.
UPDATE webhook_endpoints
SET description = COALESCE(:description::text, description),
    event_types = COALESCE(:event_types::text[], event_types),
    payload_format = COALESCE(:payload_format::text, payload_format),
    include_previews = COALESCE(:include_previews::boolean, include_previews)
WHERE workspace_id = :workspace_id AND id = :id
RETURNING *;

-- webhook_endpoints_count_enabled --
-- How many enabled endpoints a workspace has (a cap applies).
SELECT count(*)::int FROM webhook_endpoints WHERE workspace_id = :workspace_id AND enabled;

-- webhook_endpoints_list --
-- This workspace's endpoints, newest first.
SELECT * FROM webhook_endpoints WHERE workspace_id = :workspace_id ORDER BY created_at DESC, id DESC LIMIT :limit;

-- webhook_endpoint_get --
-- One endpoint of this workspace.
SELECT * FROM webhook_endpoints WHERE workspace_id = :workspace_id AND id = :id;

-- webhook_endpoint_disable --
-- Stop sending to an endpoint (kept disabled if it already was); deliveries not yet made give up.
WITH disabled AS (
    UPDATE webhook_endpoints
    SET enabled = false, disabled_at = COALESCE(disabled_at, clock_timestamp())
    WHERE workspace_id = :workspace_id AND id = :id
    RETURNING *
), dropped AS (
    UPDATE webhook_deliveries d
    SET status = 'FAILED', next_attempt_at = NULL, last_error = 'endpoint disabled'
    FROM disabled
    WHERE d.endpoint_id = disabled.id AND d.status = 'PENDING'
)
SELECT * FROM disabled;

-- webhook_endpoint_rotate_secret --
-- A new secret; the old one keeps signing beside it (a second signature) for :grace_s seconds.
UPDATE webhook_endpoints
SET previous_secret = secret,
    previous_secret_expires_at = clock_timestamp() + make_interval(secs => :grace_s),
    secret = :secret,
    secret_rotated_at = clock_timestamp()
WHERE workspace_id = :workspace_id AND id = :id
RETURNING *;

-- webhook_deliveries_page --
-- An endpoint's deliveries, newest first, before a delivery id (0: from the newest). The body of an analysis.completed
-- delivery not sent yet is what its first attempt would send now ({} if its result no longer exists).
SELECT d.id, d.webhook_id, d.event_type, d.status, d.attempts, d.job_id, d.last_status_code, d.last_error,
       d.last_attempt_at, d.next_attempt_at, d.created_at, d.delivered_at,
       COALESCE(d.payload, (SELECT analysis_delivery_payload(d.analysis_result_id, e.payload_format)
                            FROM webhook_endpoints e WHERE e.id = d.endpoint_id), '{}'::jsonb) AS payload
FROM webhook_deliveries d
WHERE d.workspace_id = :workspace_id AND d.endpoint_id = :endpoint_id
  AND (:before_id::bigint = 0 OR d.id < :before_id::bigint)
ORDER BY d.id DESC
LIMIT :limit;

-- webhook_deliveries_claim --
-- Claim up to :batch due deliveries, oldest first: each counts an attempt and is put out of reach for :lease_s seconds
-- (the request's timeout and a margin), so a loop that dies mid-request loses nothing. Endpoints in :full already have
-- as many requests in flight as one may, those in :room (endpoint id -> count) only that many more, the others up to
-- :per_endpoint, so an endpoint with a large backlog can't take every slot. The endpoints with pending deliveries are
-- found by skipping along webhook_deliveries_pending (one descent each), then each one's oldest due ones.
WITH RECURSIVE pending AS (
    (SELECT d.endpoint_id FROM webhook_deliveries d WHERE d.status = 'PENDING' ORDER BY d.endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT d.endpoint_id FROM webhook_deliveries d
            WHERE d.status = 'PENDING' AND d.endpoint_id > p.endpoint_id ORDER BY d.endpoint_id LIMIT 1)
    FROM pending p
    WHERE p.endpoint_id IS NOT NULL
), candidates AS (
    SELECT x.id, x.next_attempt_at
    FROM pending p
    CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_at
        FROM webhook_deliveries d
        WHERE d.endpoint_id = p.endpoint_id AND d.status = 'PENDING' AND d.next_attempt_at <= clock_timestamp()
        ORDER BY d.next_attempt_at
        LIMIT COALESCE((:room::jsonb ->> p.endpoint_id)::int, :per_endpoint::int)
    ) x
    WHERE p.endpoint_id IS NOT NULL AND NOT p.endpoint_id = ANY(:full::text[])
    ORDER BY x.next_attempt_at
    LIMIT 2 * :batch::int  -- a margin for those another loop holds (skipped)
), picked AS (
    -- By id, from an array: whatever the plan's estimates, a few primary key lookups (a join was hashed over all
    -- pending deliveries once the statement's plan became generic).
    SELECT d.id
    FROM webhook_deliveries d
    WHERE d.id = ANY(ARRAY(SELECT id FROM candidates))
      AND d.status = 'PENDING' AND d.next_attempt_at <= clock_timestamp()
    ORDER BY d.next_attempt_at
    LIMIT :batch
    FOR UPDATE OF d SKIP LOCKED
)
-- An analysis.completed delivery gets its body at its first claim (migration 014), in its endpoint's format.
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1,
    last_attempt_at = clock_timestamp(),
    next_attempt_at = clock_timestamp() + make_interval(secs => :lease_s),
    payload = COALESCE(d.payload, analysis_delivery_payload(d.analysis_result_id, e.payload_format))
FROM picked, webhook_endpoints e
WHERE d.id = picked.id AND e.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, d.event_type, d.webhook_id, d.job_id, d.payload::text AS body, d.attempts,
          e.url, e.enabled, e.secret,
          CASE WHEN e.previous_secret_expires_at > clock_timestamp() THEN e.previous_secret END AS previous_secret;

-- webhook_deliveries_record --
-- The outcomes of attempts (parallel arrays): delivered, due again after :retry_in_s, or given up (retry NULL and not
-- delivered). An attempt whose claim was lost meanwhile (another loop took the delivery over) changes nothing.
UPDATE webhook_deliveries d
SET status = CASE WHEN o.delivered THEN 'DELIVERED' WHEN o.retry_in_s IS NULL THEN 'FAILED' ELSE 'PENDING' END,
    next_attempt_at = CASE WHEN NOT o.delivered AND o.retry_in_s IS NOT NULL
                           THEN clock_timestamp() + make_interval(secs => o.retry_in_s) END,
    delivered_at = CASE WHEN o.delivered THEN clock_timestamp() END,
    last_status_code = o.status_code,
    last_error = o.error
FROM unnest(:ids::bigint[], :attempts::int[], :delivered::boolean[], :retry_in_s::float8[], :status_codes::int[],
            :errors::text[]) AS o (id, attempts, delivered, retry_in_s, status_code, error)
WHERE d.id = o.id AND d.status = 'PENDING' AND d.attempts = o.attempts
RETURNING d.id, d.status, d.attempts;

-- analysis_results_newest_id --
-- The newest analysis result's id (0 for none): where an analysisCompleted watch catches up from after its process
-- lost the notifications for a while.
SELECT COALESCE(max(id), 0)::bigint FROM analysis_results;

-- analysis_events_since --
-- An agent's results after a result id, oldest first (the analysisCompleted catch-up).
SELECT r.* FROM analysis_results r
WHERE r.id > :after_id::bigint AND r.workspace_id = :workspace_id AND r.agent_id = :agent_id
ORDER BY r.id
LIMIT :limit;
