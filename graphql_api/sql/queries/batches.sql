-- batch_jobs_waiting --
-- BATCH jobs with pending items to send in a new provider batch, oldest first.
SELECT j.job_id, j.config_snapshot ->> 'model' AS model
FROM rerun_jobs j
WHERE j.mode = 'BATCH' AND j.status IN ('QUEUED', 'RUNNING') AND j.cancel_requested_at IS NULL
  AND EXISTS (SELECT 1 FROM rerun_items i WHERE i.job_id = j.job_id AND i.status = 'PENDING')
ORDER BY j.created_at
LIMIT :limit;

-- batch_job_lock --
-- A BATCH job still taking new batches, locked first (the lock order of migration 004); nothing when another
-- runner holds it.
SELECT job_id FROM rerun_jobs
WHERE job_id = :job_id AND mode = 'BATCH' AND status IN ('QUEUED', 'RUNNING') AND cancel_requested_at IS NULL
FOR NO KEY UPDATE SKIP LOCKED;

-- batch_items_pick --
-- The next pending items of a job for a new batch, in job order (the caller holds the job row).
SELECT seq FROM rerun_items
WHERE job_id = :job_id AND status = 'PENDING'
ORDER BY seq
LIMIT :size
FOR UPDATE;

-- batch_insert --
-- A new batch of a job, held by the runner that creates it (it submits it next); named after the job and its rank.
INSERT INTO rerun_batches (job_id, display_name, model, items, lease_owner, lease_expires_at)
VALUES (:job_id, :job_id || '-' || (SELECT count(*) + 1 FROM rerun_batches WHERE job_id = :job_id), :model, :items,
        :owner, clock_timestamp() + make_interval(secs => :lease_s))
RETURNING *;

-- batch_items_lease --
-- The items of a new batch run in it: RUNNING, leased to the batch with a lease that never expires.
UPDATE rerun_items
SET status = 'RUNNING', lease_owner = 'batch:' || :batch_id::bigint, lease_expires_at = 'infinity',
    attempts = attempts + 1, started_at = COALESCE(started_at, clock_timestamp())
WHERE job_id = :job_id AND seq = ANY(:seqs::int[]);

-- batch_claim_due --
-- Batches with something to do now (submit, poll, record), each held by one runner for :lease_s; with the
-- state of their job.
WITH due AS (
    SELECT batch_id FROM rerun_batches
    WHERE NOT recorded AND next_poll_at <= clock_timestamp()
      AND (lease_expires_at IS NULL OR lease_expires_at < clock_timestamp())
    ORDER BY next_poll_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE rerun_batches b SET lease_owner = :owner, lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
FROM due, rerun_jobs j
WHERE b.batch_id = due.batch_id AND j.job_id = b.job_id
RETURNING b.*, j.cancel_requested_at;

-- batch_items --
-- The items still running in a batch, in job order, with what the analyzer reads of their conversation.
SELECT i.job_id, i.seq, i.conversation_id, i.outputs, c.kind, c.transcript, c.utterances, c.status,
       c.disconnection_reason
FROM rerun_items i
JOIN conversations c ON c.workspace_id = i.workspace_id AND c.conversation_id = i.conversation_id
WHERE i.job_id = :job_id AND i.lease_owner = 'batch:' || :batch_id::bigint AND i.status = 'RUNNING'
ORDER BY i.seq;

-- batch_submit_attempt --
-- A runner is about to send the batch: counted first, so the next one looks for it at the provider before sending.
UPDATE rerun_batches SET submit_attempts = submit_attempts + 1 WHERE batch_id = :batch_id AND lease_owner = :owner;

-- batch_submitted --
-- The provider accepted the batch: poll it from now on.
UPDATE rerun_batches
SET provider_name = :provider_name, state = 'PENDING', submitted_at = clock_timestamp(), next_poll_at = clock_timestamp() + make_interval(secs => :poll_s),
    lease_owner = NULL, lease_expires_at = NULL
WHERE batch_id = :batch_id AND lease_owner = :owner;

-- batch_submit_failed --
-- A submit that may work later (the provider was unreachable or busy): try again at :retry_s.
UPDATE rerun_batches
SET error = :error,
    next_poll_at = clock_timestamp() + make_interval(secs => :retry_s), lease_owner = NULL, lease_expires_at = NULL
WHERE batch_id = :batch_id AND lease_owner = :owner;

-- batch_polled --
-- What the provider said of a batch that is not done; look again at :poll_s.
UPDATE rerun_batches
SET state = :state, polls = polls + 1, error = :error,
    next_poll_at = clock_timestamp() + make_interval(secs => :poll_s), lease_owner = NULL, lease_expires_at = NULL
WHERE batch_id = :batch_id AND lease_owner = :owner;

-- batch_cancel_sent --
-- The job is being canceled and the provider was asked to cancel its batch.
UPDATE rerun_batches SET cancel_sent_at = clock_timestamp() WHERE batch_id = :batch_id AND lease_owner = :owner;

-- batch_recorded --
-- The batch's results (or failure) are on its items: it is over.
UPDATE rerun_batches
SET state = :state, recorded = true, error = :error, finished_at = clock_timestamp(), polls = polls + :polled,
    lease_owner = NULL, lease_expires_at = NULL
WHERE batch_id = :batch_id AND lease_owner = :owner;

-- rerun_batches_of_jobs --
-- The batches of these jobs of this workspace, oldest first (RerunJob.batches).
SELECT b.* FROM rerun_batches b
JOIN rerun_jobs j ON j.job_id = b.job_id
WHERE j.workspace_id = :workspace_id AND b.job_id = ANY(:job_ids::text[])
ORDER BY b.job_id, b.batch_id;
