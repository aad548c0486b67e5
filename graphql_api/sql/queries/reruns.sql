-- rerun_target_check --
-- The explicit ids a rerun asks for, as found in this workspace (missing ones are absent).
SELECT conversation_id, kind, agent_id, status
FROM conversations
WHERE workspace_id = :workspace_id AND conversation_id = ANY(:ids::text[]);

-- rerun_targets --
-- The conversations a rerun takes (a fragment, see conversations_selected): the explicit ids, or those the
-- filter selects. The caller narrows :statuses to the ones that can be analyzed.
{{conversations_selected}}
  AND (:ids::text[] IS NULL OR c.conversation_id = ANY(:ids::text[]));

-- rerun_config_fingerprints --
-- Per output, the digest of what decides it in a rerun's config snapshot (migration 012).
SELECT analysis_output_fingerprints(:config::jsonb, :kind::text);

-- rerun_planned --
-- A rerun's targets (a fragment), each with its current result and the outputs its item asks for
-- (rerun_item_outputs: NULL for all, empty for nothing to recompute). :fingerprints is the config's
-- (rerun_config_fingerprints), NULL for a full rerun.
SELECT c.conversation_id, c.sort_at, c.transcript, r.id AS previous_id,
       rerun_item_outputs(:fingerprints::jsonb, r.output_fingerprints, :fields::text[], :only_changed::boolean) AS outputs
{{rerun_targets}}

-- rerun_estimate --
-- How many conversations a rerun targets and how many characters their transcripts hold, per set of outputs asked for.
SELECT p.outputs, count(*)::int AS conversations, COALESCE(sum(length(p.transcript)), 0)::bigint AS transcript_chars
FROM ({{rerun_planned}}) p
GROUP BY p.outputs;

-- rerun_job_by_idempotency_key --
-- The job an earlier request with this idempotency key created.
SELECT * FROM rerun_jobs WHERE workspace_id = :workspace_id AND idempotency_key = :idempotency_key;

-- rerun_job_insert --
-- A new job with its config snapshot and estimate; items are added by rerun_items_insert.
INSERT INTO rerun_jobs (job_id, workspace_id, agent_id, kind, requested_by, idempotency_key, request_hash,
                        config_version, config_snapshot, targets, estimated_input_tokens, estimated_output_tokens,
                        estimated_cost_usd, mode)
VALUES (:job_id, :workspace_id, :agent_id, :kind, :requested_by, :idempotency_key, :request_hash,
        :config_version, :config_snapshot::jsonb, :targets::jsonb, :estimated_input_tokens, :estimated_output_tokens,
        :estimated_cost_usd, :mode)
ON CONFLICT (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING job_id;

-- rerun_items_insert --
-- One item per targeted conversation with something to recompute, in a single statement; the job's total is what
-- was inserted, and the others are counted as skipped.
WITH planned AS MATERIALIZED (
    {{rerun_planned}}
), inserted AS (
    INSERT INTO rerun_items (job_id, seq, workspace_id, conversation_id, previous_result_id, outputs)
    SELECT :job_id, row_number() OVER (ORDER BY p.sort_at DESC, p.conversation_id DESC), :workspace_id,
           p.conversation_id, p.previous_id, p.outputs
    FROM planned p
    WHERE p.outputs IS NULL OR cardinality(p.outputs) > 0
    RETURNING 1
)
UPDATE rerun_jobs SET total = (SELECT count(*) FROM inserted),
                      skipped = (SELECT count(*) FROM planned WHERE cardinality(outputs) = 0)
WHERE job_id = :job_id
RETURNING *, pg_notify('rerun_queued', job_id) IS NULL AS notified;

-- rerun_retry_targets --
-- The conversations a retry takes (a fragment): the items of the retried job in the statuses asked for, whose
-- conversation can still be analyzed (:statuses), each with its current result.
FROM rerun_items i
JOIN conversations c ON c.workspace_id = i.workspace_id AND c.conversation_id = i.conversation_id
LEFT JOIN analysis_results r
       ON r.workspace_id = c.workspace_id AND r.conversation_id = c.conversation_id AND r.is_current
WHERE i.workspace_id = :workspace_id AND i.job_id = :retry_of AND i.status = ANY(:item_statuses::text[])
  AND c.status = ANY(:statuses::text[]);

-- rerun_retry_estimate --
-- How many conversations a retry takes and how many characters their transcripts hold, per set of outputs its
-- items ask for (those of the items retried).
SELECT i.outputs, count(*)::int AS conversations, COALESCE(sum(length(c.transcript)), 0)::bigint AS transcript_chars
{{rerun_retry_targets}}
GROUP BY i.outputs;

-- rerun_retry_items_insert --
-- A retry's items, in the retried job's order; the job's total is what was inserted (see rerun_items_insert).
WITH inserted AS (
    INSERT INTO rerun_items (job_id, seq, workspace_id, conversation_id, previous_result_id, outputs)
    SELECT :job_id, row_number() OVER (ORDER BY i.seq), :workspace_id, c.conversation_id, r.id, i.outputs
    {{rerun_retry_targets}}
    RETURNING 1
)
UPDATE rerun_jobs SET total = (SELECT count(*) FROM inserted)
WHERE job_id = :job_id
RETURNING *, pg_notify('rerun_queued', job_id) IS NULL AS notified;

-- rerun_jobs_by_ids --
-- Jobs of this workspace by id, for the job loader (a retry's retryOf).
SELECT * FROM rerun_jobs WHERE workspace_id = :workspace_id AND job_id = ANY(:job_ids::text[]);

-- rerun_job_retries --
-- The retries of these jobs (targets.retryOf), newest first.
SELECT * FROM rerun_jobs
WHERE workspace_id = :workspace_id AND targets->>'retryOf' = ANY(:job_ids::text[])
ORDER BY created_at DESC, job_id DESC;

-- rerun_job_get --
-- One job of this workspace.
SELECT * FROM rerun_jobs WHERE workspace_id = :workspace_id AND job_id = :job_id;

-- rerun_jobs_page --
-- This workspace's jobs, newest first, after the keyset cursor; optionally one agent's.
SELECT * FROM rerun_jobs
WHERE workspace_id = :workspace_id
  AND (:agent_id::text IS NULL OR agent_id = :agent_id::text)
  AND (:after_at::timestamptz IS NULL OR (created_at, job_id) < (:after_at::timestamptz, :after_id::text))
ORDER BY created_at DESC, job_id DESC
LIMIT :limit;

-- rerun_items_page --
-- A job's items in job order, after a position; optionally only some statuses.
SELECT * FROM rerun_items
WHERE workspace_id = :workspace_id AND job_id = :job_id
  AND (:statuses::text[] IS NULL OR status = ANY(:statuses::text[]))
  AND seq > :after_seq
ORDER BY seq
LIMIT :limit;

-- rerun_items_finished_since --
-- Items of a job that finished after the given finish index, in finish order (progress streams).
SELECT * FROM rerun_items
WHERE workspace_id = :workspace_id AND job_id = :job_id AND finish_index > :after_index
ORDER BY finish_index
LIMIT :limit;

-- analysis_results_by_ids --
-- Results by id, for the result loader.
SELECT * FROM analysis_results WHERE workspace_id = :workspace_id AND id = ANY(:ids::bigint[]);

-- rerun_items_claim --
-- Claim up to :batch open items, oldest job first: pending ones, and running ones whose lease expired. A BATCH job's
-- items go to the batch runner instead (graphql_api/reruns/batches.py).
WITH picked AS (
    SELECT i.job_id, i.seq
    FROM rerun_jobs j
    CROSS JOIN LATERAL (
        SELECT i.job_id, i.seq
        FROM rerun_items i
        WHERE i.job_id = j.job_id AND i.status IN ('PENDING', 'RUNNING')
          AND (i.status = 'PENDING' OR i.lease_expires_at < clock_timestamp())
        ORDER BY i.seq
        LIMIT :batch
        FOR UPDATE OF i SKIP LOCKED
    ) i
    WHERE j.status IN ('QUEUED', 'RUNNING') AND j.cancel_requested_at IS NULL AND j.mode = 'INTERACTIVE'
    ORDER BY j.created_at, i.seq
    LIMIT :batch
)
UPDATE rerun_items i
SET status = 'RUNNING', lease_owner = :owner, attempts = i.attempts + 1,
    lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s),
    started_at = COALESCE(i.started_at, clock_timestamp())
FROM picked, conversations c
WHERE i.job_id = picked.job_id AND i.seq = picked.seq
  AND c.workspace_id = i.workspace_id AND c.conversation_id = i.conversation_id
RETURNING i.job_id, i.seq, i.workspace_id, i.conversation_id, i.attempts, i.outputs,
          c.kind, c.transcript, c.utterances, c.status, c.disconnection_reason;

-- rerun_jobs_mark_running --
-- Jobs whose first items were claimed start running.
-- Job rows are locked in job id order, like everywhere else (see migration 004).
WITH queued AS (
    SELECT job_id FROM rerun_jobs
    WHERE job_id = ANY(:job_ids::text[]) AND status = 'QUEUED'
    ORDER BY job_id
    FOR NO KEY UPDATE
)
UPDATE rerun_jobs j SET status = 'RUNNING', started_at = clock_timestamp(), updated_at = clock_timestamp()
FROM queued
WHERE j.job_id = queued.job_id AND j.status = 'QUEUED'
RETURNING j.job_id, j.workspace_id, notify_rerun_progress(j.*);

-- rerun_items_heartbeat --
-- Extend the leases of the items this worker is working on. An item locked right now is being finished,
-- released or canceled: it is skipped rather than waited for, so the heartbeat never waits on anybody.
WITH held AS (
    SELECT i.job_id, i.seq
    FROM rerun_items i
    JOIN unnest(:job_ids::text[], :seqs::int[]) AS h(job_id, seq) ON i.job_id = h.job_id AND i.seq = h.seq
    WHERE i.lease_owner = :owner AND i.status = 'RUNNING'
    ORDER BY i.job_id, i.seq
    FOR UPDATE OF i SKIP LOCKED
)
UPDATE rerun_items i SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
FROM held
WHERE i.job_id = held.job_id AND i.seq = held.seq
RETURNING i.job_id, i.seq;

-- rerun_items_leased_by --
-- The items a worker holds a lease on, as the database sees it.
SELECT job_id, seq FROM rerun_items WHERE lease_owner = :owner AND status = 'RUNNING';

-- rerun_item_release --
-- Give back a claimed item this worker won't finish (see release_rerun_item).
SELECT * FROM release_rerun_item(:job_id, :seq, :owner);

-- rerun_items_reap --
-- Cancel the abandoned items of jobs being canceled (see reap_canceled_rerun_items).
SELECT reap_canceled_rerun_items();

-- rerun_job_canceling --
-- Whether a job is being canceled (workers check before starting an item they claimed ahead).
SELECT cancel_requested_at IS NOT NULL FROM rerun_jobs WHERE job_id = :job_id;

-- rerun_job_snapshot --
-- The config snapshot of a job, for workers.
SELECT job_id, workspace_id, agent_id, kind, config_version, config_snapshot FROM rerun_jobs WHERE job_id = :job_id;

-- rerun_item_finish --
-- Commit one item's outcome if this worker still holds its lease (see finish_rerun_item, migration 012: :outputs
-- are those the item asked for, NULL for all).
SELECT * FROM finish_rerun_item(:job_id, :seq, :owner, :error, :model, :summary, :successful, :user_sentiment,
                                :in_voicemail, :custom_data::jsonb, :input_tokens, :output_tokens, :cost_usd,
                                :outputs::text[], :evaluation::jsonb, :rationale::jsonb);

-- rerun_job_cancel --
-- Mark a job as being canceled and cancel its items that have not started (the caller holds the job row: items
-- come second); answers how many it canceled, for rerun_items_count_canceled.
WITH requested AS (
    UPDATE rerun_jobs SET cancel_requested_at = clock_timestamp()
    WHERE workspace_id = :workspace_id AND job_id = :job_id
), pending AS (
    SELECT seq FROM rerun_items
    WHERE job_id = :job_id AND workspace_id = :workspace_id AND status = 'PENDING'
    ORDER BY seq
    FOR UPDATE
), canceled AS (
    UPDATE rerun_items i SET status = 'CANCELED', finished_at = clock_timestamp()
    FROM pending
    WHERE i.job_id = :job_id AND i.seq = pending.seq
    RETURNING 1
)
SELECT count(*)::int FROM canceled;

-- rerun_items_count_canceled --
-- Count a job's canceled items; it is CANCELED now if nothing runs, else when its running items end
-- (see count_canceled_rerun_items).
SELECT * FROM count_canceled_rerun_items(:job_id, :canceled);

-- rerun_job_lock --
-- A job of this workspace, locked for a status change (first in the lock order, see migration 004).
SELECT * FROM rerun_jobs WHERE workspace_id = :workspace_id AND job_id = :job_id FOR NO KEY UPDATE;

-- rerun_request_lock --
-- Serialize identical rerun requests of one workspace until the transaction ends (a double-click's twins).
SELECT pg_advisory_xact_lock(hashtextextended(:workspace_id::bigint::text || ':' || :request_hash::text, 7201));

-- rerun_job_same_running --
-- An unfinished job of this workspace for the same targets with the same config, if any.
SELECT job_id, status FROM rerun_jobs
WHERE workspace_id = :workspace_id AND request_hash = :request_hash AND config_snapshot = :config_snapshot::jsonb
  AND status IN ('QUEUED', 'RUNNING') AND cancel_requested_at IS NULL
LIMIT 1;

-- rerun_impacts --
-- The impact of each of these jobs of this workspace over its succeeded items, counting the first :uptos[i] items
-- to finish (parallel arrays; see rerun_impact, migration 011), for the impact loader.
SELECT j.job_id, k.upto, rerun_impact(j.job_id, k.upto) AS impact
FROM unnest(:job_ids::text[], :uptos::int[]) AS k (job_id, upto)
JOIN rerun_jobs j ON j.job_id = k.job_id AND j.workspace_id = :workspace_id;
