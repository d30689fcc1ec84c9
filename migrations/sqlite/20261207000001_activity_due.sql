-- Which streams are due (DESIGN 14), read from an index instead of from every link.
-- Every stream (a live link of a provider with events) has a mark once its provider
-- is a source of activity: `refreshed_at` '' until it is first read. The first pass
-- with a provider as a source (a row of `activity_sources`) marks every stream it
-- has, and from then on the triggers mark each new one (a link made, or moved to
-- another customer), so that no write path can forget to. A poll reads the most due
-- from `activity_marks_due`, a few rows for each provider, whatever the number of
-- customers. (Not `INSERT OR IGNORE`: SQLite applies the conflict policy of the
-- statement that fired a trigger to the trigger's statements.)
CREATE TABLE activity_sources (
    tenant   TEXT NOT NULL,
    provider TEXT NOT NULL,
    PRIMARY KEY (tenant, provider)
);
CREATE INDEX activity_marks_due ON activity_marks(tenant, provider, refreshed_at, customer_id);

CREATE TRIGGER activity_stream_new AFTER INSERT ON links
WHEN EXISTS (SELECT 1 FROM activity_sources WHERE provider = NEW.provider)
BEGIN
    INSERT INTO activity_marks (tenant, provider, customer_id, refreshed_at)
        SELECT s.tenant, NEW.provider, NEW.customer_id, '' FROM activity_sources s
        WHERE s.provider = NEW.provider AND NOT EXISTS (SELECT 1 FROM activity_marks m
            WHERE m.tenant = s.tenant AND m.provider = NEW.provider AND m.customer_id = NEW.customer_id);
END;
CREATE TRIGGER activity_stream_moved AFTER UPDATE OF customer_id ON links
WHEN OLD.customer_id IS NOT NEW.customer_id
  AND EXISTS (SELECT 1 FROM activity_sources WHERE provider = NEW.provider)
BEGIN
    INSERT INTO activity_marks (tenant, provider, customer_id, refreshed_at)
        SELECT s.tenant, NEW.provider, NEW.customer_id, '' FROM activity_sources s
        WHERE s.provider = NEW.provider AND NOT EXISTS (SELECT 1 FROM activity_marks m
            WHERE m.tenant = s.tenant AND m.provider = NEW.provider AND m.customer_id = NEW.customer_id);
END;
