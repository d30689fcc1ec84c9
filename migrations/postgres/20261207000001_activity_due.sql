-- Which streams are due (DESIGN 14), read from an index instead of from every link:
-- as in the SQLite migration of the same name. The function is this tenant's (made in
-- its schema); the tables it reads and writes are found through the connection's
-- search_path, which is the tenant's.
CREATE TABLE activity_sources (
    tenant   TEXT COLLATE "C" NOT NULL,
    provider TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, provider)
);
CREATE INDEX activity_marks_due ON activity_marks(tenant, provider, refreshed_at, customer_id);

CREATE FUNCTION activity_stream_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.customer_id IS NOT DISTINCT FROM NEW.customer_id THEN
        RETURN NULL;
    END IF;
    INSERT INTO activity_marks (tenant, provider, customer_id, refreshed_at)
        SELECT s.tenant, NEW.provider, NEW.customer_id, '' FROM activity_sources s
        WHERE s.provider = NEW.provider
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER activity_stream_new AFTER INSERT OR UPDATE OF customer_id
    ON links FOR EACH ROW EXECUTE FUNCTION activity_stream_new();
