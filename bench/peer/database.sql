-- What PostGraphile needs in the bench database, beside the project's migrations (bench/postgraphile.py applies it
-- to the benchmark's own database only; the project's schema never has these functions).

-- conversations_analysis --
-- A conversation's current analysis result: PostGraphile exposes it as the computed column `analysis`.
CREATE FUNCTION conversations_analysis(c conversations) RETURNS analysis_results LANGUAGE sql STABLE AS $$
    SELECT r.* FROM analysis_results r
    WHERE r.workspace_id = c.workspace_id AND r.conversation_id = c.conversation_id AND r.is_current
$$;

-- conversations_current_successful --
-- Only when the conversations table has no current_successful column (migration 009): the current result's
-- successful as a computed column, which the smart tag makes usable in `condition: {currentSuccessful: ...}`.
CREATE FUNCTION conversations_current_successful(c conversations) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT r.successful FROM analysis_results r
    WHERE r.workspace_id = c.workspace_id AND r.conversation_id = c.conversation_id AND r.is_current
$$;
COMMENT ON FUNCTION conversations_current_successful(conversations) IS '@behavior +filterBy';
