-- Jobs held by lease across processes (bot/leasing.py): jobs.lease_owner and lease_until exist
-- since V1 here; the claim's index is SQLite's V7.
CREATE INDEX jobs_by_provider ON jobs (state, provider, created_at)
