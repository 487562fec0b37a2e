//! A strict parser for the HLS playlists an encoder pushes (RFC 8216).
//!
//! Strict on purpose: a pushed playlist is untrusted input that decides which objects
//! viewers fetch, so anything we would not serve faithfully (absolute URIs, `..`, byte
//! ranges, encryption, durations that are not numbers) is refused with a reason the
//! stream's state can show, instead of being passed through.

use std::fmt::Write as _;

use super::Segment;

/// A parsed playlist: either a master (variants) or a media playlist (segments).
#[derive(Debug, Clone, PartialEq)]
pub enum Playlist {
    Master(MasterPlaylist),
    Media(MediaPlaylist),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MasterPlaylist {
    pub variants: Vec<StreamInf>,
    /// URIs of alternative renditions (`EXT-X-MEDIA` with a `URI`), e.g. a separate audio.
    pub media_uris: Vec<String>,
    /// The master viewers get: regenerated from what was parsed and checked (variants and
    /// renditions with known attributes only). Anything else in the pushed master (I-frame
    /// playlists, session data and keys, content steering, …) could send a viewer to
    /// another site and is dropped.
    pub rendered: String,
}

/// One `EXT-X-STREAM-INF` entry of a master playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInf {
    pub uri: String,
    pub bandwidth: u64,
    /// The tag's attribute list as written (read single values with [`attribute`]).
    pub attributes: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaPlaylist {
    pub target_duration: u64,
    pub media_sequence: u64,
    pub segments: Vec<Segment>,
    /// `EXT-X-ENDLIST`: the encoder finished.
    pub ended: bool,
}

/// Why a playlist was refused, with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Longest segment we accept (an hour is far beyond any live encoder's setting).
const MAX_SEGMENT_S: f64 = 3600.0;
/// Most segments one pushed playlist may list.
const MAX_ENTRIES: usize = 20_000;

/// Validate a URI from a playlist: a relative path of safe characters, no `.`/`..`
/// segments, no query or fragment, at most 4 levels.
pub fn validate_uri(uri: &str) -> Result<(), String> {
    if uri.is_empty() || uri.len() > 200 {
        return Err("URI is empty or longer than 200 characters".into());
    }
    if uri.contains("://") || uri.starts_with('/') {
        return Err(format!("URI {uri:?} is not relative"));
    }
    let parts: Vec<&str> = uri.split('/').collect();
    if parts.len() > 4 {
        return Err(format!("URI {uri:?} is nested deeper than 4 levels"));
    }
    for p in parts {
        if p.is_empty() || p == "." || p == ".." {
            return Err(format!("URI {uri:?} has an empty, '.' or '..' segment"));
        }
        if !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(format!(
                "URI {uri:?} has characters outside [A-Za-z0-9._-/]"
            ));
        }
    }
    Ok(())
}

/// `EXT-X-STREAM-INF` attributes a regenerated master keeps (RFC 8216bis 4.4.6.2).
const STREAM_INF_ATTRIBUTES: &[&str] = &[
    "BANDWIDTH",
    "AVERAGE-BANDWIDTH",
    "SCORE",
    "CODECS",
    "SUPPLEMENTAL-CODECS",
    "RESOLUTION",
    "FRAME-RATE",
    "HDCP-LEVEL",
    "VIDEO-RANGE",
    "AUDIO",
    "VIDEO",
    "SUBTITLES",
    "CLOSED-CAPTIONS",
];

/// `EXT-X-MEDIA` attributes a regenerated master keeps (its URI was validated).
const MEDIA_ATTRIBUTES: &[&str] = &[
    "TYPE",
    "URI",
    "GROUP-ID",
    "LANGUAGE",
    "ASSOC-LANGUAGE",
    "NAME",
    "STABLE-RENDITION-ID",
    "DEFAULT",
    "AUTOSELECT",
    "FORCED",
    "INSTREAM-ID",
    "CHARACTERISTICS",
    "CHANNELS",
];

/// The attributes of `list` named in `keep`, in their order, re-serialised. Values keep
/// their quoting; a quoted value may not carry a quote, an enumerated one only safe bytes.
fn keep_attributes(list: &str, keep: &[&str]) -> String {
    let mut out = Vec::new();
    let mut rest = list;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let (raw, next) = if let Some(stripped) = after.strip_prefix('"') {
            let Some(end) = stripped.find('"') else { break };
            let tail = &stripped[end + 1..];
            (&after[..end + 2], tail.strip_prefix(',').unwrap_or(tail))
        } else {
            match after.find(',') {
                Some(c) => (&after[..c], &after[c + 1..]),
                None => (after, ""),
            }
        };
        let safe = raw.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'"' | b'.' | b'_' | b'-' | b',' | b' ' | b'/')
        });
        if keep.contains(&key) && safe {
            out.push(format!("{key}={raw}"));
        }
        rest = next;
    }
    out.join(",")
}

/// The value of attribute `name` in an attribute list (`A=1,B="x,y"`), unquoted.
pub fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(stripped) = after.strip_prefix('"') {
            let end = stripped.find('"')?;
            let tail = &stripped[end + 1..];
            (&stripped[..end], tail.strip_prefix(',').unwrap_or(tail))
        } else {
            match after.find(',') {
                Some(c) => (&after[..c], &after[c + 1..]),
                None => (after, ""),
            }
        };
        if key == name {
            return Some(value);
        }
        rest = next;
    }
    None
}

/// The largest media sequence number accepted: 2^48, a segment a second for nine million
/// years, far from where i64 arithmetic could overflow.
pub const MAX_MEDIA_SEQUENCE: u64 = 1 << 48;

fn parse_u64(v: &str, what: &str) -> Result<u64, String> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| format!("{what} {v:?} is not a non-negative integer"))
}

/// Parse a pushed playlist.
pub fn parse(text: &str) -> Result<Playlist, ParseError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let err = |line: usize, reason: String| ParseError { line, reason };
    match lines.next() {
        Some((_, "#EXTM3U")) => {}
        Some((n, _)) => return Err(err(n, "the playlist does not start with #EXTM3U".into())),
        None => return Err(err(1, "the playlist is empty".into())),
    }
    let mut media = MediaPlaylist::default();
    let mut target: Option<u64> = None;
    let mut master = MasterPlaylist {
        variants: vec![],
        media_uris: vec![],
        rendered: "#EXTM3U\n".to_string(),
    };
    let mut pending_inf: Option<(usize, f64)> = None;
    let mut pending_stream: Option<(usize, u64, &str)> = None;
    let mut discontinuity = false;
    let mut map: Option<String> = None;
    for (n, line) in lines {
        if line.is_empty() {
            continue;
        }
        if let Some(tag) = line.strip_prefix('#') {
            let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
            match name {
                "EXTINF" => {
                    if pending_inf.is_some() {
                        return Err(err(
                            n,
                            "#EXTINF without a URI after the previous one".into(),
                        ));
                    }
                    let d = value.split(',').next().unwrap_or("").trim();
                    let d: f64 = d
                        .parse()
                        .map_err(|_| err(n, format!("#EXTINF duration {d:?} is not a number")))?;
                    if !d.is_finite() || !(0.0..=MAX_SEGMENT_S).contains(&d) {
                        return Err(err(n, format!("#EXTINF duration {d} is out of range")));
                    }
                    pending_inf = Some((n, d));
                }
                "EXT-X-TARGETDURATION" => {
                    let t = parse_u64(value, "#EXT-X-TARGETDURATION").map_err(|r| err(n, r))?;
                    if t == 0 || t as f64 > MAX_SEGMENT_S {
                        return Err(err(n, format!("#EXT-X-TARGETDURATION {t} is out of range")));
                    }
                    target = Some(t);
                }
                "EXT-X-MEDIA-SEQUENCE" => {
                    let seq = parse_u64(value, "#EXT-X-MEDIA-SEQUENCE").map_err(|r| err(n, r))?;
                    // Bounded, so that sequence arithmetic (as i64, plus the segment
                    // count) can never overflow or wrap.
                    if seq > MAX_MEDIA_SEQUENCE {
                        return Err(err(
                            n,
                            format!(
                                "#EXT-X-MEDIA-SEQUENCE {seq} is out of range (at most {MAX_MEDIA_SEQUENCE})"
                            ),
                        ));
                    }
                    media.media_sequence = seq;
                }
                "EXT-X-DISCONTINUITY" => discontinuity = true,
                "EXT-X-ENDLIST" => media.ended = true,
                "EXT-X-MAP" => {
                    if attribute(value, "BYTERANGE").is_some() {
                        return Err(err(n, "#EXT-X-MAP with BYTERANGE is not supported".into()));
                    }
                    let uri = attribute(value, "URI")
                        .ok_or_else(|| err(n, "#EXT-X-MAP has no URI".into()))?;
                    validate_uri(uri).map_err(|r| err(n, r))?;
                    map = Some(uri.to_string());
                }
                "EXT-X-BYTERANGE" => {
                    return Err(err(n, "#EXT-X-BYTERANGE is not supported".into()));
                }
                "EXT-X-KEY" if attribute(value, "METHOD") != Some("NONE") => {
                    return Err(err(
                        n,
                        "encrypted segments (#EXT-X-KEY) are not supported".into(),
                    ));
                }
                "EXT-X-STREAM-INF" => {
                    let bw = attribute(value, "BANDWIDTH")
                        .ok_or_else(|| err(n, "#EXT-X-STREAM-INF has no BANDWIDTH".into()))?;
                    let bw = parse_u64(bw, "BANDWIDTH").map_err(|r| err(n, r))?;
                    pending_stream = Some((n, bw, value));
                    let _ = writeln!(
                        master.rendered,
                        "#EXT-X-STREAM-INF:{}",
                        keep_attributes(value, STREAM_INF_ATTRIBUTES)
                    );
                }
                "EXT-X-MEDIA" => {
                    if let Some(uri) = attribute(value, "URI") {
                        validate_uri(uri).map_err(|r| err(n, r))?;
                        master.media_uris.push(uri.to_string());
                    }
                    let _ = writeln!(
                        master.rendered,
                        "#EXT-X-MEDIA:{}",
                        keep_attributes(value, MEDIA_ATTRIBUTES)
                    );
                }
                "EXT-X-VERSION" => {
                    let v = parse_u64(value, "#EXT-X-VERSION").map_err(|r| err(n, r))?;
                    if !(1..=12).contains(&v) {
                        return Err(err(n, format!("#EXT-X-VERSION {v} is out of range")));
                    }
                    let _ = writeln!(master.rendered, "#EXT-X-VERSION:{v}");
                }
                "EXT-X-INDEPENDENT-SEGMENTS" => {
                    master.rendered.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
                }
                // Everything else (VERSION, PLAYLIST-TYPE, PROGRAM-DATE-TIME, comments, …)
                // does not change which bytes are served.
                _ => {}
            }
            continue;
        }
        validate_uri(line).map_err(|r| err(n, r))?;
        if let Some((_, bandwidth, attributes)) = pending_stream.take() {
            let _ = writeln!(master.rendered, "{line}");
            master.variants.push(StreamInf {
                uri: line.to_string(),
                bandwidth,
                attributes: attributes.to_string(),
            });
        } else if let Some((_, duration)) = pending_inf.take() {
            if media.segments.len() >= MAX_ENTRIES {
                return Err(err(n, format!("more than {MAX_ENTRIES} segments")));
            }
            media.segments.push(Segment {
                uri: line.to_string(),
                duration,
                discontinuity: std::mem::take(&mut discontinuity),
                map: map.clone(),
            });
        } else {
            return Err(err(
                n,
                format!("URI {line:?} is not preceded by #EXTINF or #EXT-X-STREAM-INF"),
            ));
        }
    }
    if let Some((n, _)) = pending_inf {
        return Err(err(n, "#EXTINF is not followed by a URI".into()));
    }
    if let Some((n, _, _)) = pending_stream {
        return Err(err(n, "#EXT-X-STREAM-INF is not followed by a URI".into()));
    }
    let is_master = !master.variants.is_empty() || !master.media_uris.is_empty();
    if is_master {
        if !media.segments.is_empty() || target.is_some() {
            return Err(err(
                1,
                "the playlist mixes variants and media segments".into(),
            ));
        }
        return Ok(Playlist::Master(master));
    }
    media.target_duration =
        target.ok_or_else(|| err(1, "a media playlist needs #EXT-X-TARGETDURATION".into()))?;
    Ok(Playlist::Media(media))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFMPEG_TS: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.000000,\nindex7.ts\n#EXTINF:1.966667,\nindex8.ts\n";

    #[test]
    fn parses_an_ffmpeg_live_playlist() {
        let Playlist::Media(m) = parse(FFMPEG_TS).unwrap() else {
            panic!("not media")
        };
        assert_eq!(m.target_duration, 2);
        assert_eq!(m.media_sequence, 7);
        assert!(!m.ended);
        assert_eq!(
            m.segments,
            vec![
                Segment {
                    uri: "index7.ts".into(),
                    duration: 2.0,
                    discontinuity: false,
                    map: None
                },
                Segment {
                    uri: "index8.ts".into(),
                    duration: 1.966667,
                    discontinuity: false,
                    map: None
                },
            ]
        );
    }

    #[test]
    fn parses_fmp4_discontinuity_and_endlist() {
        let text = "#EXTM3U\r\n#EXT-X-TARGETDURATION:4\r\n#EXT-X-MAP:URI=\"init.mp4\"\r\n\
            #EXTINF:4,\r\na/s0.m4s\r\n#EXT-X-DISCONTINUITY\r\n#EXTINF:3.5,title\r\na/s1.m4s\r\n\
            #EXT-X-ENDLIST\r\n";
        let Playlist::Media(m) = parse(text).unwrap() else {
            panic!("not media")
        };
        assert!(m.ended);
        assert_eq!(m.media_sequence, 0);
        assert_eq!(m.segments[0].map.as_deref(), Some("init.mp4"));
        assert!(!m.segments[0].discontinuity);
        assert!(m.segments[1].discontinuity);
        assert_eq!(m.segments[1].duration, 3.5);
    }

    #[test]
    fn parses_a_master_playlist() {
        let text = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=1400000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720\n\
            hi.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=600000\nlo.m3u8\n";
        let Playlist::Master(m) = parse(text).unwrap() else {
            panic!("not master")
        };
        assert_eq!(
            m.variants,
            vec![
                StreamInf {
                    uri: "hi.m3u8".into(),
                    bandwidth: 1_400_000,
                    attributes: "BANDWIDTH=1400000,CODECS=\"avc1.64001f,mp4a.40.2\",\
                                 RESOLUTION=1280x720"
                        .into(),
                },
                StreamInf {
                    uri: "lo.m3u8".into(),
                    bandwidth: 600_000,
                    attributes: "BANDWIDTH=600000".into(),
                }
            ]
        );
        assert_eq!(m.media_uris, vec!["audio.m3u8".to_string()]);
    }

    #[test]
    fn attributes_handle_quoted_commas() {
        let list = "BANDWIDTH=1,CODECS=\"avc1.4d401f,mp4a.40.2\",RESOLUTION=640x360";
        assert_eq!(attribute(list, "CODECS"), Some("avc1.4d401f,mp4a.40.2"));
        assert_eq!(attribute(list, "RESOLUTION"), Some("640x360"));
        assert_eq!(attribute(list, "BANDWIDTH"), Some("1"));
        assert_eq!(attribute(list, "NOPE"), None);
    }

    fn reason(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn refuses_malformed_playlists() {
        assert_eq!(reason(""), "line 1: the playlist is empty");
        assert_eq!(
            reason("hello\n"),
            "line 1: the playlist does not start with #EXTM3U"
        );
        assert_eq!(
            reason("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:abc,\nx.ts\n"),
            "line 3: #EXTINF duration \"abc\" is not a number"
        );
        assert_eq!(
            reason("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:-1,\nx.ts\n"),
            "line 3: #EXTINF duration -1 is out of range"
        );
        assert_eq!(
            reason("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n"),
            "line 3: #EXTINF is not followed by a URI"
        );
        assert_eq!(
            reason("#EXTM3U\n#EXT-X-TARGETDURATION:2\nx.ts\n"),
            "line 3: URI \"x.ts\" is not preceded by #EXTINF or #EXT-X-STREAM-INF"
        );
        assert_eq!(
            reason("#EXTM3U\n#EXTINF:2,\nx.ts\n"),
            "line 1: a media playlist needs #EXT-X-TARGETDURATION"
        );
        assert_eq!(
            reason("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nhttp://evil/x.ts\n"),
            "line 4: URI \"http://evil/x.ts\" is not relative"
        );
        assert_eq!(
            reason("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n../x.ts\n"),
            "line 4: URI \"../x.ts\" has an empty, '.' or '..' segment"
        );
        assert_eq!(
            reason("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nx.ts?a=1\n"),
            "line 4: URI \"x.ts?a=1\" has characters outside [A-Za-z0-9._-/]"
        );
        assert_eq!(
            reason("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n"),
            "line 3: encrypted segments (#EXT-X-KEY) are not supported"
        );
        assert_eq!(
            reason("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-BYTERANGE:100@0\n"),
            "line 3: #EXT-X-BYTERANGE is not supported"
        );
        assert_eq!(
            reason("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n#EXT-X-TARGETDURATION:2\n"),
            "line 1: the playlist mixes variants and media segments"
        );
        assert_eq!(
            reason("#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\na.m3u8\n"),
            "line 2: #EXT-X-STREAM-INF has no BANDWIDTH"
        );
    }

    #[test]
    fn huge_media_sequences_are_refused() {
        for seq in [
            "18446744073709551615",
            "9223372036854775807",
            "281474976710657",
        ] {
            let text = format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{seq}\n#EXTINF:2.0,\na.ts\n"
            );
            assert!(parse(&text).is_err(), "{seq}");
        }
        let text = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{MAX_MEDIA_SEQUENCE}\n#EXTINF:2.0,\na.ts\n"
        );
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn a_master_is_regenerated_without_off_site_entries() {
        let pushed = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n\
            #EXT-X-SESSION-DATA:DATA-ID=\"x\",URI=\"https://evil.example/d.json\"\n\
            #EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"https://evil.example/k\"\n\
            #EXT-X-CONTENT-STEERING:SERVER-URI=\"https://evil.example/steer\"\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"https://evil.example/i.m3u8\"\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en\",DEFAULT=YES,URI=\"audio.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,AUDIO=\"aud\",PATHWAY-ID=\"evil\"\n\
            v720.m3u8\n";
        let Playlist::Master(m) = parse(pushed).unwrap() else {
            panic!("a master")
        };
        assert_eq!(
            m.rendered,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en\",DEFAULT=YES,URI=\"audio.m3u8\"\n\
             #EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,AUDIO=\"aud\"\n\
             v720.m3u8\n"
        );
        assert!(!m.rendered.contains("evil"));
    }
}
