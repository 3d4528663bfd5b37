-- As bot/migrations/V3: results of jobs finished before V2 were posted already.
UPDATE jobs SET result_ref = '' WHERE result_ref IS NULL AND state IN ('done', 'failed', 'filtered');
