-- Several processes on one database (a shared store): a running job is held by one process
-- (lease_owner) until lease_until, renewed while it runs. A lease that runs out was a dead
-- or stalled process's: any process puts the job back in the queue (an interrupted attempt).
-- With one process (SQLite and its data-dir lock) both stay NULL.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until REAL;
CREATE INDEX jobs_by_provider ON jobs (state, provider, created_at)
