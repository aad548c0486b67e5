-- rerun_targets() (003) repeated the filter of a page of calls or chats. A page and a rerun's targets now share
-- one fragment of the named queries (conversations_selected, in queries/conversations.sql), planned as written:
-- an inlined SQL function would have cost every page about 0.2 ms more planning. Nothing calls it any more.
DROP FUNCTION rerun_targets(bigint, text, text[], text, int[], timestamptz, timestamptz, text[], boolean, text[]);
