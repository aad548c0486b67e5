-- Keys are looked up by their public prefix and their hash compared in constant time in the server,
-- so the time an answer takes says nothing about how close a guessed key came.
CREATE INDEX api_keys_by_prefix ON api_keys (key_prefix) WHERE revoked_at IS NULL;
