-- webhook_endpoint_insert --
-- A new endpoint of this workspace.
INSERT INTO webhook_endpoints (id, workspace_id, url, description, event_types, secret)
VALUES (:id, :workspace_id, :url, :description, :event_types::text[], :secret)
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
-- An endpoint's deliveries, newest first, before a delivery id (0: from the newest).
SELECT d.* FROM webhook_deliveries d
WHERE d.workspace_id = :workspace_id AND d.endpoint_id = :endpoint_id
  AND (:before_id::bigint = 0 OR d.id < :before_id::bigint)
ORDER BY d.id DESC
LIMIT :limit;

-- webhook_deliveries_claim --
-- Claim up to :batch due deliveries of enabled endpoints, oldest first: each counts an attempt and is put out of
-- reach for :lease_s seconds (the request's timeout and a margin), so a loop that dies mid-request loses nothing.
WITH due AS (
    SELECT d.id
    FROM webhook_deliveries d
    WHERE d.status = 'PENDING' AND d.next_attempt_at <= clock_timestamp()
    ORDER BY d.next_attempt_at
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1,
    last_attempt_at = clock_timestamp(),
    next_attempt_at = clock_timestamp() + make_interval(secs => :lease_s)
FROM due, webhook_endpoints e
WHERE d.id = due.id AND e.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, d.event_type, d.webhook_id, d.job_id, d.payload::text AS body, d.attempts,
          e.url, e.enabled, e.secret,
          CASE WHEN e.previous_secret_expires_at > clock_timestamp() THEN e.previous_secret END AS previous_secret;

-- webhook_delivery_record --
-- The outcome of one attempt: delivered, due again at :retry_in_s, or given up (:retry_in_s NULL and not delivered).
UPDATE webhook_deliveries
SET status = CASE WHEN :delivered::boolean THEN 'DELIVERED' WHEN :retry_in_s::float8 IS NULL THEN 'FAILED' ELSE 'PENDING' END,
    next_attempt_at = CASE WHEN NOT :delivered::boolean AND :retry_in_s::float8 IS NOT NULL
                           THEN clock_timestamp() + make_interval(secs => :retry_in_s::float8) END,
    delivered_at = CASE WHEN :delivered::boolean THEN clock_timestamp() END,
    last_status_code = :status_code::int,
    last_error = :error::text
WHERE id = :id AND status = 'PENDING' AND attempts = :attempts::int
RETURNING id, status, attempts;
