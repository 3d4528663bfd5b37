-- Picks persist: a Pick is part of the channel's history, shown again after a reload. One row
-- per picked image; picking it again records who picked it last.
CREATE TABLE picks (
    job_id          TEXT NOT NULL REFERENCES jobs(id),
    idx             INTEGER NOT NULL,
    picked_by       TEXT NOT NULL,
    picked_by_name  TEXT NOT NULL DEFAULT '',
    created_at      REAL NOT NULL,
    PRIMARY KEY (job_id, idx)
);
-- "My images" in the gallery.
CREATE INDEX jobs_by_owner ON jobs (platform, tenant, owner_id, created_at)
