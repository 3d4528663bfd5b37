-- The image verbs' child jobs get kinds of their own (Vary (Subtle) and (Strong), Upscale,
-- Zoom out, Pan), so lineage, Info and the double-click guard tell them apart.
--
-- SQLite cannot alter a CHECK constraint. Rebuilding jobs is not possible inside this
-- migration's transaction while foreign keys are on (every other table references it), so
-- the constraint's text is widened in place: the procedure SQLite documents for changes that
-- leave every stored row valid (https://www.sqlite.org/lang_altertable.html, "otheralter").
-- Only 'reroll' in the kind list is matched, so a list another migration widened is widened
-- again, not replaced. RESET makes this connection read the new schema. (PostgreSQL: drop the
-- jobs_kind_check constraint and add it with these values.)
PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = replace(sql, '''reroll''', '''reroll'', ''vary-subtle'', ''vary-strong'', ''upscale'', ''zoom'', ''pan''')
WHERE type = 'table' AND name = 'jobs' AND sql NOT LIKE '%''vary-subtle''%';
PRAGMA writable_schema = RESET
