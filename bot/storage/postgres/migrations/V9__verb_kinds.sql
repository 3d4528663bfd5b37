-- The image verbs' child jobs get kinds of their own (SQLite's V9 widens its CHECK in place).
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (
    kind IN ('imagine', 'refine', 'vary', 'reroll', 'vary-subtle', 'vary-strong', 'upscale', 'zoom', 'pan')
)
