-- Results of jobs finished before V2 were posted; deliver_pending must not post them again.
UPDATE jobs SET result_ref = '' WHERE result_ref IS NULL AND state IN ('done', 'failed', 'filtered');
