-- How a live recording becomes VOD: `transcode` (the tenant's ladder) or `copy` (the
-- pushed renditions are published as they are, no encode).
ALTER TABLE live_streams ADD COLUMN vod_mode TEXT NOT NULL DEFAULT 'transcode';
-- Our segment sequence numbers are allocated from this counter in one statement, so two
-- gateways taking requests of one stream never hand out the same number.
ALTER TABLE live_streams ADD COLUMN next_seq BIGINT NOT NULL DEFAULT 1;
UPDATE live_streams SET next_seq =
    COALESCE((SELECT MAX(seq) + 1 FROM live_segments WHERE stream_id = live_streams.id), 1);
CREATE INDEX live_streams_asset ON live_streams(asset_id);
