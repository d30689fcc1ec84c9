-- Which streams are due (DESIGN 14), read from an index instead of from every link:
-- as in the SQLite migration of the same name. The functions are this tenant's (made
-- in its schema); the tables they read and write are found through the connection's
-- search_path, which is the tenant's.
--
-- The triggers of the group sync (20261206000001) are made again here, statement by
-- statement where they can be. A row trigger is a PL/pgSQL call for every row: the
-- two of them took a link's insert from 22-27 µs of the server's time to 47-50 µs,
-- and a customer's update or a merged link paid one too. A statement's trigger reads
-- the rows it changed as a transition table, one set-based statement for all of
-- them. An UPDATE trigger with a column list can have no transition table, so a move
-- of a link to another customer (rare) keeps a row trigger, with a WHEN that the
-- server tests without a call.
CREATE TABLE activity_sources (
    tenant   TEXT COLLATE "C" NOT NULL,
    provider TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, provider)
);
CREATE INDEX activity_marks_due ON activity_marks(tenant, provider, refreshed_at, customer_id);

CREATE FUNCTION activity_streams_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO activity_marks (tenant, provider, customer_id, refreshed_at)
        SELECT s.tenant, n.provider, n.customer_id, '' FROM new_links n
        JOIN activity_sources s ON s.provider = n.provider
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER activity_streams_new AFTER INSERT ON links
    REFERENCING NEW TABLE AS new_links
    FOR EACH STATEMENT EXECUTE FUNCTION activity_streams_new();

CREATE FUNCTION activity_stream_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO activity_marks (tenant, provider, customer_id, refreshed_at)
        SELECT s.tenant, NEW.provider, NEW.customer_id, '' FROM activity_sources s
        WHERE s.provider = NEW.provider
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER activity_stream_moved AFTER UPDATE OF customer_id ON links
    FOR EACH ROW WHEN (OLD.customer_id IS DISTINCT FROM NEW.customer_id)
    EXECUTE FUNCTION activity_stream_moved();

-- The group sync's marks, as before: nothing until a pass is recorded.
DROP TRIGGER groups_dirty_customer ON customers;
DROP TRIGGER groups_dirty_link ON links;
DROP FUNCTION groups_dirty_customer();
DROP FUNCTION groups_dirty_link();

CREATE FUNCTION groups_dirty_customers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM groups_passes) THEN
        INSERT INTO groups_dirty (customer_id)
            SELECT n.id FROM new_customers n JOIN old_customers o ON o.id = n.id
            WHERE o.fields IS DISTINCT FROM n.fields
               OR (o.tombstoned_at IS NULL) <> (n.tombstoned_at IS NULL)
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER groups_dirty_customers AFTER UPDATE ON customers
    REFERENCING OLD TABLE AS old_customers NEW TABLE AS new_customers
    FOR EACH STATEMENT EXECUTE FUNCTION groups_dirty_customers();

-- A link made or deleted: its customer. (Each statement's trigger has only its own
-- transition table; PL/pgSQL reads a statement's tables when it first runs it.)
CREATE FUNCTION groups_dirty_links_made_or_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM groups_passes) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO groups_dirty (customer_id)
            SELECT DISTINCT customer_id FROM new_links ON CONFLICT DO NOTHING;
    ELSE
        INSERT INTO groups_dirty (customer_id)
            SELECT DISTINCT customer_id FROM old_links ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER groups_dirty_links_new AFTER INSERT ON links
    REFERENCING NEW TABLE AS new_links
    FOR EACH STATEMENT EXECUTE FUNCTION groups_dirty_links_made_or_gone();
CREATE TRIGGER groups_dirty_links_gone AFTER DELETE ON links
    REFERENCING OLD TABLE AS old_links
    FOR EACH STATEMENT EXECUTE FUNCTION groups_dirty_links_made_or_gone();

-- A link's key (provider, remote id) is never updated: it pairs the old row with the
-- new.
CREATE FUNCTION groups_dirty_links() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM groups_passes) THEN
        INSERT INTO groups_dirty (customer_id)
            SELECT DISTINCT c FROM (
                SELECT n.customer_id AS a, o.customer_id AS b
                FROM new_links n JOIN old_links o
                  ON o.provider = n.provider AND o.remote_id = n.remote_id
                WHERE o.customer_id IS DISTINCT FROM n.customer_id
                   OR o.gone IS DISTINCT FROM n.gone
                   OR (o.snapshot IS NULL) <> (n.snapshot IS NULL)) AS changed,
              LATERAL (VALUES (a), (b)) AS v(c)
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER groups_dirty_links AFTER UPDATE ON links
    REFERENCING OLD TABLE AS old_links NEW TABLE AS new_links
    FOR EACH STATEMENT EXECUTE FUNCTION groups_dirty_links();
