-- Live HLS push. A stream records into its own asset (status `uploading` while live);
-- segments are keyed by our own sequence number, so an encoder that restarts and reuses
-- segment names never overwrites bytes a viewer or a CDN already has.
CREATE TABLE live_streams (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    asset_id          TEXT NOT NULL,
    name              TEXT,
    ingest_hash       TEXT NOT NULL,       -- sha256 hex of the ingest token (in the URL)
    state             TEXT NOT NULL,       -- idle|live|ending|ended
    end_reason        TEXT,                -- endlist|idle|api
    dvr_window_s      INTEGER NOT NULL,
    vod               INTEGER NOT NULL,    -- 1: the recording becomes a transcoded VOD
    master            TEXT,                -- name of a pushed master playlist, if any
    primary_playlist  TEXT,                -- the media playlist recorded for the VOD
    segments_received INTEGER NOT NULL DEFAULT 0,
    bytes_received    INTEGER NOT NULL DEFAULT 0,
    rejected_requests INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,                -- JSON {"code","message","at"}
    last_error_at     INTEGER,
    last_ok_at        INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    ended_at          INTEGER
);
CREATE INDEX live_streams_tenant ON live_streams(tenant_id, created_at);
CREATE INDEX live_streams_state ON live_streams(state);

CREATE TABLE live_playlists (
    stream_id       TEXT NOT NULL,
    name            TEXT NOT NULL,
    target_duration INTEGER NOT NULL,
    epoch           INTEGER NOT NULL DEFAULT 0,  -- bumped when the encoder restarts
    first_msn       INTEGER NOT NULL DEFAULT -1, -- media sequence of the last push
    last_msn        INTEGER NOT NULL DEFAULT -1, -- highest media sequence recorded
    next_pos        INTEGER NOT NULL DEFAULT 0,
    ended           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream_id, name)
);

CREATE TABLE live_segments (
    stream_id     TEXT NOT NULL,
    seq           INTEGER NOT NULL,            -- ours; names the stored object
    name          TEXT NOT NULL,               -- as the encoder named it
    ext           TEXT NOT NULL,
    is_init       INTEGER NOT NULL DEFAULT 0,
    playlist      TEXT,                        -- set once a playlist lists it
    pos           INTEGER,                     -- its index in that playlist, from 0
    duration      REAL,
    discontinuity INTEGER NOT NULL DEFAULT 0,
    map_seq       INTEGER,                     -- the init segment it needs (fMP4)
    size          INTEGER,
    received_at   INTEGER,                     -- NULL: listed before its bytes came
    PRIMARY KEY (stream_id, seq)
);
CREATE INDEX live_segments_name ON live_segments(stream_id, name);
CREATE INDEX live_segments_pos ON live_segments(stream_id, playlist, pos);
