-- The outbox: every message the bot must post or take down, written before it is sent, with
-- the platform references of what was already done (``steps``), so a retry or a restart
-- resumes instead of repeating. One 'result' and one 'takedown' row per job at most.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY,
    job_id       TEXT REFERENCES jobs(id),
    kind         TEXT NOT NULL CHECK (kind IN ('result', 'takedown', 'alert')),
    platform     TEXT NOT NULL,
    tenant       TEXT NOT NULL,
    channel_id   TEXT NOT NULL,
    thread_id    TEXT,
    user_id      TEXT NOT NULL DEFAULT '',
    payload      TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL,
    lease_until  REAL NOT NULL DEFAULT 0,
    steps        TEXT NOT NULL DEFAULT '{}',
    last_error   TEXT NOT NULL DEFAULT '',
    created_at   REAL NOT NULL,
    done_at      REAL
);
CREATE UNIQUE INDEX outbox_once ON outbox (job_id, kind) WHERE kind IN ('result', 'takedown');
CREATE INDEX outbox_due ON outbox (state, next_at);

-- Every other message posted for a job (a Pick), so Delete can take it down too.
CREATE TABLE job_posts (
    job_id    TEXT NOT NULL REFERENCES jobs(id),
    platform  TEXT NOT NULL,
    ref       TEXT NOT NULL,
    kind      TEXT NOT NULL,
    PRIMARY KEY (job_id, ref)
);

-- Results already posted before the outbox existed are not posted again: nothing to add.
