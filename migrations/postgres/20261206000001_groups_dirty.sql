-- What the group sync (DESIGN 14) must plan again: as in the SQLite migration of the
-- same name. The functions are this tenant's (made in its schema); the table they
-- write is found through the connection's search_path, which is the tenant's. Until
-- a pass is recorded, nothing is marked (the next pass plans everyone).
CREATE TABLE groups_dirty (
    customer_id BIGINT PRIMARY KEY
);
CREATE TABLE groups_passes (
    tenant   TEXT COLLATE "C" NOT NULL,
    provider TEXT COLLATE "C" NOT NULL,
    rules    TEXT NOT NULL,
    full_at  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, provider)
);

CREATE FUNCTION groups_dirty_customer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM groups_passes) THEN
        RETURN NULL;
    END IF;
    IF OLD.fields IS DISTINCT FROM NEW.fields
       OR (OLD.tombstoned_at IS NULL) <> (NEW.tombstoned_at IS NULL) THEN
        INSERT INTO groups_dirty (customer_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER groups_dirty_customer AFTER UPDATE OF fields, tombstoned_at
    ON customers FOR EACH ROW EXECUTE FUNCTION groups_dirty_customer();

CREATE FUNCTION groups_dirty_link() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM groups_passes) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO groups_dirty (customer_id) VALUES (NEW.customer_id) ON CONFLICT DO NOTHING;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO groups_dirty (customer_id) VALUES (OLD.customer_id) ON CONFLICT DO NOTHING;
    ELSIF OLD.remote_id IS DISTINCT FROM NEW.remote_id
       OR OLD.customer_id IS DISTINCT FROM NEW.customer_id
       OR OLD.gone IS DISTINCT FROM NEW.gone
       OR (OLD.snapshot IS NULL) <> (NEW.snapshot IS NULL) THEN
        INSERT INTO groups_dirty (customer_id) VALUES (NEW.customer_id), (OLD.customer_id)
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER groups_dirty_link AFTER INSERT OR DELETE OR UPDATE OF remote_id, customer_id, gone, snapshot
    ON links FOR EACH ROW EXECUTE FUNCTION groups_dirty_link();
