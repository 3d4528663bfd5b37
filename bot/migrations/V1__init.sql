-- Jobs are written before any provider call, with every parameter, so nothing is lost.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    platform        TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    channel_id      TEXT NOT NULL,
    thread_id       TEXT,
    owner_id        TEXT NOT NULL,           -- who asked and who pays (the clicker for actions)
    owner_name      TEXT NOT NULL DEFAULT '',
    kind            TEXT NOT NULL CHECK (kind IN ('imagine', 'refine', 'vary', 'reroll')),
    parent_job_id   TEXT REFERENCES jobs(id),
    parent_index    INTEGER,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'filtered')),
    request_json    TEXT NOT NULL,
    provider        TEXT NOT NULL,
    model           TEXT,
    seed            INTEGER NOT NULL,
    n               INTEGER NOT NULL CHECK (n BETWEEN 1 AND 10),
    attempts        INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    notice          TEXT NOT NULL DEFAULT '',
    status_ref      TEXT,
    interaction_id  TEXT UNIQUE,
    grid_sha        TEXT,
    grid_ext        TEXT,
    deleted         INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL
);
CREATE INDEX jobs_by_state ON jobs (state, created_at);
CREATE INDEX jobs_by_channel ON jobs (platform, tenant, channel_id, created_at);
CREATE INDEX jobs_by_parent ON jobs (parent_job_id);

CREATE TABLE images (
    job_id    TEXT NOT NULL REFERENCES jobs(id),
    idx       INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    ext       TEXT NOT NULL,
    seed      INTEGER,
    width     INTEGER NOT NULL,
    height    INTEGER NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX images_by_sha ON images (sha256);

-- Quota usage per scope ("user:platform:tenant:id", "ws:platform:tenant") and window
-- ("d:2026-11-22", "m:2026-11"). Updated only by conditional UPDATEs inside BEGIN IMMEDIATE.
CREATE TABLE quota_usage (
    scope   TEXT NOT NULL,
    win     TEXT NOT NULL,
    used    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, win)
);

-- The ledger: one reserve per job, then at most one commit and one refund.
-- Invariant: reserved - refunded = committed + in flight.
CREATE TABLE ledger (
    id          INTEGER PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    kind        TEXT NOT NULL CHECK (kind IN ('reserve', 'commit', 'refund')),
    payer       TEXT NOT NULL,
    units       INTEGER NOT NULL CHECK (units >= 0),
    windows     TEXT NOT NULL,   -- JSON [[scope, win], ...] charged at reserve time
    exempt      INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL,
    UNIQUE (job_id, kind)
);

CREATE TABLE quota_limits (
    scope    TEXT PRIMARY KEY,
    daily    INTEGER,
    monthly  INTEGER
);

CREATE TABLE blocks (
    scope       TEXT PRIMARY KEY,
    reason      TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL
);

CREATE TABLE channels (
    platform       TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    channel_id     TEXT NOT NULL,
    collaborative  INTEGER NOT NULL,
    PRIMARY KEY (platform, tenant, channel_id)
);

CREATE TABLE admin_log (
    id          INTEGER PRIMARY KEY,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE alerts (
    key      TEXT PRIMARY KEY,
    last_at  REAL NOT NULL
);
