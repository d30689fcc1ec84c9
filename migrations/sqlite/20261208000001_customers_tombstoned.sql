-- The customers `forget` tombstoned: a few rows, read whole by a statement that
-- leaves them out (`NOT IN (SELECT id FROM customers WHERE tombstoned_at IS NOT
-- NULL)`), where a join read each customer's wide row to test it (`status` counted
-- activity over every stream in 33 s at 1,000,000 people, most of it reading the
-- customers' rows from disk).
CREATE INDEX customers_tombstoned ON customers(id) WHERE tombstoned_at IS NOT NULL;
