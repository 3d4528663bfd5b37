-- A command that expands to more jobs than grammar.confirm_over waits here for its Confirm
-- button: nothing is charged or queued until then. The button carries only the id; who may
-- press it and what it runs are read back from this row, so it survives a restart.
CREATE TABLE confirmations (
    id          TEXT PRIMARY KEY,
    platform    TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    channel_id  TEXT NOT NULL,
    owner_id    TEXT NOT NULL,
    text        TEXT NOT NULL,
    init_sha    TEXT,
    init_ext    TEXT,
    created_at  DOUBLE PRECISION NOT NULL,
    used_at     DOUBLE PRECISION
)
