-- The message that carries a finished job's images and buttons (see bot/migrations/V2).
ALTER TABLE jobs ADD COLUMN result_ref TEXT;
