-- Links listed again with a snapshot to compare to (`Store::email_claims` reads
-- these): on a first run and in a steady state there are none, so the check reads
-- nothing instead of every observed link (1.4 s at 1,000,000 people).
CREATE INDEX links_reobserved ON links(customer_id) WHERE observed IS NOT NULL AND snapshot IS NOT NULL AND gone = 0;
-- Creates that may have reached their provider, looked up before a push sends
-- anything: a few rows, not every pending operation of the provider (1 s a provider
-- at 1,000,000 people).
CREATE INDEX outbox_doubtful ON outbox(provider, state) WHERE op = 'create' AND maybe_applied = 1;
-- What is known of a batch of customers' group memberships (`Store::group_batch`): by
-- customer id within a provider, not every membership of the provider for each batch.
CREATE INDEX group_members_customer ON group_members(tenant, provider, customer_id);
