-- The message that carries a finished job's images and buttons, so Delete can take it down
-- as well as the status message above it.
ALTER TABLE jobs ADD COLUMN result_ref TEXT;
