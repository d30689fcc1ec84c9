-- What a listing reads of its provider's links, each from one index, without a look at
-- the wide link rows: the listed keys (`Store::listed_keys`) and the live links whose
-- absence is a deletion (`Store::live_links`).
CREATE INDEX links_listed ON links(provider, remote_id, listed_key) WHERE listed_key IS NOT NULL AND gone = 0;
CREATE INDEX links_live ON links(provider, customer_id, remote_id) WHERE gone = 0 AND snapshot IS NOT NULL;
