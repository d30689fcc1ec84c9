-- What the group sync (DESIGN 14) must plan again. A customer's plan reads its fields,
-- its tombstone and its links (id, liveness, whether merged); any change to those marks
-- the customer here, by trigger, so that no write path can forget to, and a cycle in
-- which nothing changed plans nobody. (A new customer is planned once linked: a plan
-- reads only linked customers, and the link's insert marks it.) `groups_passes` is,
-- per group provider, the rules and the time of the last pass that planned every
-- customer: a pass plans everyone again when the rules change, and at the full
-- listing's interval. Until a pass is recorded (a first run, a store without
-- `[[groups]]`) the next pass plans everyone anyway, so nothing is marked: the
-- triggers cost a write nothing. (Not `INSERT OR IGNORE`: SQLite applies the conflict
-- policy of the statement that fired a trigger to the trigger's statements, so an
-- ignore would not be one.)
CREATE TABLE groups_dirty (
    customer_id INTEGER PRIMARY KEY
);
CREATE TABLE groups_passes (
    tenant   TEXT NOT NULL,
    provider TEXT NOT NULL,
    rules    TEXT NOT NULL,
    full_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, provider)
);

CREATE TRIGGER groups_dirty_customer AFTER UPDATE OF fields, tombstoned_at ON customers
WHEN (OLD.fields IS NOT NEW.fields OR (OLD.tombstoned_at IS NULL) <> (NEW.tombstoned_at IS NULL))
  AND EXISTS (SELECT 1 FROM groups_passes)
BEGIN
    INSERT INTO groups_dirty (customer_id)
        SELECT NEW.id WHERE NOT EXISTS (SELECT 1 FROM groups_dirty WHERE customer_id = NEW.id);
END;
CREATE TRIGGER groups_dirty_link_new AFTER INSERT ON links
WHEN EXISTS (SELECT 1 FROM groups_passes)
BEGIN
    INSERT INTO groups_dirty (customer_id)
        SELECT NEW.customer_id WHERE NOT EXISTS (SELECT 1 FROM groups_dirty WHERE customer_id = NEW.customer_id);
END;
CREATE TRIGGER groups_dirty_link AFTER UPDATE OF remote_id, customer_id, gone, snapshot ON links
WHEN (OLD.remote_id IS NOT NEW.remote_id OR OLD.customer_id IS NOT NEW.customer_id
  OR OLD.gone IS NOT NEW.gone OR (OLD.snapshot IS NULL) <> (NEW.snapshot IS NULL))
  AND EXISTS (SELECT 1 FROM groups_passes)
BEGIN
    INSERT INTO groups_dirty (customer_id)
        SELECT NEW.customer_id WHERE NOT EXISTS (SELECT 1 FROM groups_dirty WHERE customer_id = NEW.customer_id);
    INSERT INTO groups_dirty (customer_id)
        SELECT OLD.customer_id WHERE NOT EXISTS (SELECT 1 FROM groups_dirty WHERE customer_id = OLD.customer_id);
END;
CREATE TRIGGER groups_dirty_link_gone AFTER DELETE ON links
WHEN EXISTS (SELECT 1 FROM groups_passes)
BEGIN
    INSERT INTO groups_dirty (customer_id)
        SELECT OLD.customer_id WHERE NOT EXISTS (SELECT 1 FROM groups_dirty WHERE customer_id = OLD.customer_id);
END;
