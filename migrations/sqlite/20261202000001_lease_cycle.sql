-- When a worker last claimed the tenant for a cycle: the claim of due tenants orders by it.
ALTER TABLE leases ADD COLUMN last_started TEXT;
