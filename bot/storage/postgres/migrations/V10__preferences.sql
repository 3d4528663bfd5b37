-- Saved choices: a user's or a channel's /imagine defaults, a channel's or the workspace's
-- avatar style. One row per (kind, scope, subject); the value is a small JSON object read by
-- bot/defaults.py and bot/avatars.py, so a new setting needs no migration.
CREATE TABLE preferences (
    platform    TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    kind        TEXT NOT NULL,       -- 'defaults' | 'avatar'
    scope       TEXT NOT NULL,       -- 'user' | 'channel' | 'workspace'
    subject     TEXT NOT NULL,       -- a user id, a channel id, '' for the workspace
    value_json  TEXT NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (platform, tenant, kind, scope, subject)
)
