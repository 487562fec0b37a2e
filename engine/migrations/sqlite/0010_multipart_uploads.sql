-- tus uploads into an S3 hot tier: bytes stream into a multipart upload of the asset's
-- source key, so any gateway can continue an upload. The upload id, the object holding the
-- committed bytes past the last whole part (the tail), and every committed part.
ALTER TABLE uploads ADD COLUMN multipart_id TEXT;
ALTER TABLE uploads ADD COLUMN tail_key TEXT;
CREATE TABLE upload_parts (
    asset_id   TEXT NOT NULL REFERENCES uploads(asset_id) ON DELETE CASCADE,
    part_index INTEGER NOT NULL,           -- 0-based; S3 part number = part_index + 1
    etag       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    PRIMARY KEY (asset_id, part_index)
);
