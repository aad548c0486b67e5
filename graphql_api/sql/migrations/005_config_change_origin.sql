-- Where each edit of a draft's config came from: the API (updateDraftPrompts), an import, or seeding.
ALTER TABLE agent_version_changes
    ADD COLUMN origin text NOT NULL DEFAULT 'api' CHECK (origin IN ('api', 'import', 'seed'));
