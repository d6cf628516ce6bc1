-- Workflow cache keys include the step's image digest (issue 9): the digest a cached
-- step's key was built with, and why a cached step ran uncached (`miss-no-commit`: the
-- digest could not be resolved, or the commit of its container failed).
ALTER TABLE highway.workflow_steps
    ADD COLUMN image_digest text,
    ADD COLUMN cache_reason text;
