-- A listing reads its provider's listed keys in the keys' own order, from an index of
-- the keys alone (`Store::listed_keys`): they arrive sorted and are packed as they come,
-- where the keys read in the order of the remote ids were held whole to be sorted.
DROP INDEX links_listed;
CREATE INDEX links_keys ON links(provider, listed_key) WHERE listed_key IS NOT NULL AND gone = 0;
