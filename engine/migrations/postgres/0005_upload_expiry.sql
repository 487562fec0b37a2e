-- tus expiration: an unfinished upload untouched until `expires_at` is swept away.
ALTER TABLE uploads ADD COLUMN expires_at BIGINT;
CREATE INDEX uploads_expiry ON uploads(expires_at);
