-- Revoking an API key (or deleting it, a workspace's deletion included) tells every server process at once,
-- whatever the path (the CLI or plain SQL): each forgets its cached answer for the key and closes the
-- WebSockets authenticated with it. The payload is the key's id.
CREATE FUNCTION notify_api_key_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('api_key_revoked', OLD.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER api_key_revoked
    AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION notify_api_key_revoked();

CREATE TRIGGER api_key_deleted
    AFTER DELETE ON api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL)
    EXECUTE FUNCTION notify_api_key_revoked();
