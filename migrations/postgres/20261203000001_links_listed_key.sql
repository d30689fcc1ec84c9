-- The key of the text a listing last sent for a linked record (see `Known` in the
-- providers): a record listed again byte for byte is neither decoded nor written.
-- NULL whenever anything but a listing changed the link.
ALTER TABLE links ADD COLUMN listed_key BIGINT;
