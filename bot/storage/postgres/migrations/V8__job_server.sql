-- Which server of a provider pool (base_urls) made a job's images, for Info; NULL for a
-- provider with one server, and for jobs finished before pools.
ALTER TABLE jobs ADD COLUMN server TEXT;
