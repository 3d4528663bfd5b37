-- Picks persist (see bot/migrations/V5__web.sql).
CREATE TABLE picks (
    job_id          TEXT NOT NULL REFERENCES jobs(id),
    idx             INTEGER NOT NULL,
    picked_by       TEXT NOT NULL,
    picked_by_name  TEXT NOT NULL DEFAULT '',
    created_at      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, idx)
);
-- "My images" in the gallery.
CREATE INDEX jobs_by_owner ON jobs (platform, tenant, owner_id, created_at);
