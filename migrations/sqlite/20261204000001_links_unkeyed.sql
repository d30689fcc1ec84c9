-- The live links that no listing has keyed yet (`Store::live_links` with
-- `unkeyed_only`): after a listing that returned every link it knew by key, only these
-- can have vanished, so a steady run reads these few instead of every live link.
CREATE INDEX links_unkeyed ON links(provider, customer_id, remote_id) WHERE gone = 0 AND snapshot IS NOT NULL AND listed_key IS NULL;
