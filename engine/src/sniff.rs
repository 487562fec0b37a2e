//! Content sniffing: refuse obvious non-media from the first bytes of an upload.
//!
//! The verdict only ever refuses what is certainly not a video (text, HTML, JSON, archives,
//! documents, executables, still images). Containers we transcode are recognised by their
//! magic numbers; anything unrecognisable either way (random bytes, a raw elementary
//! stream) is accepted and left to the worker's probe, which fails the asset with a clear
//! message. The decision depends only on the first [`WINDOW`] bytes (or the whole upload
//! if shorter), never on how the client cut its requests.

/// How many leading bytes decide.
pub const WINDOW: usize = 512;

/// Below this many bytes, "all text" says nothing (no container is this small either, but
/// the worker explains that better than a guess).
const MIN_TEXT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A container we know (its name).
    Media(&'static str),
    /// Certainly not media (what it looks like).
    NotMedia(&'static str),
    /// Neither: accepted, the worker decides.
    Unknown,
    /// Not enough bytes yet to decide.
    NeedMore,
}

fn at(head: &[u8], offset: usize, magic: &[u8]) -> bool {
    head.len() >= offset + magic.len() && &head[offset..offset + magic.len()] == magic
}

fn media(head: &[u8]) -> Option<&'static str> {
    // ISO BMFF (MP4, MOV, 3GP, fMP4): a box type at offset 4.
    const BOXES: [&[u8]; 8] = [
        b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot", b"styp",
    ];
    if BOXES.iter().any(|b| at(head, 4, b)) {
        return Some("mp4");
    }
    if at(head, 0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some("matroska");
    }
    if at(head, 0, b"RIFF") && (at(head, 8, b"AVI ") || at(head, 8, b"AVIX")) {
        return Some("avi");
    }
    if at(head, 0, b"FLV\x01") {
        return Some("flv");
    }
    if at(head, 0, b"OggS") {
        return Some("ogg");
    }
    if at(head, 0, &[0x00, 0x00, 0x01, 0xBA]) || at(head, 0, &[0x00, 0x00, 0x01, 0xB3]) {
        return Some("mpeg-ps");
    }
    if at(head, 0, &[0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11]) {
        return Some("asf");
    }
    // MPEG-TS: a sync byte every 188 bytes (or 192 for M2TS with its 4-byte prefix).
    if head.len() > 188 && head[0] == 0x47 && head[188] == 0x47 {
        return Some("mpeg-ts");
    }
    if head.len() > 196 && head[4] == 0x47 && head[196] == 0x47 {
        return Some("mpeg-ts");
    }
    None
}

fn not_media(head: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], &str); 14] = [
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xFF\xD8\xFF", "a JPEG image"),
        (b"GIF87a", "a GIF image"),
        (b"GIF89a", "a GIF image"),
        (b"%PDF-", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"PK\x05\x06", "a ZIP archive"),
        (b"\x7FELF", "an ELF executable"),
        (b"\x1F\x8B", "a gzip archive"),
        (b"7z\xBC\xAF\x27\x1C", "a 7-Zip archive"),
        (b"Rar!\x1A\x07", "a RAR archive"),
        (b"\xFD7zXZ\x00", "an xz archive"),
        (b"BZh", "a bzip2 archive"),
        (b"SQLite format 3\x00", "an SQLite database"),
    ];
    if let Some((_, what)) = MAGIC.iter().find(|(m, _)| at(head, 0, m)) {
        return Some(what);
    }
    if at(head, 0, b"RIFF") && at(head, 8, b"WEBP") {
        return Some("a WebP image");
    }
    None
}

/// Text: valid UTF-8 (a sequence cut by the window's end is fine) without control
/// characters other than whitespace. Covers plain text, HTML, XML, JSON, CSV, scripts.
fn is_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        // Only an incomplete sequence at the very end is tolerated.
        Err(e) if e.error_len().is_none() && head.len() - e.valid_up_to() < 4 => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !valid.is_empty()
        && valid
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0C'))
}

/// Judge the first bytes of an upload. `head` holds the leading bytes received so far (at
/// most [`WINDOW`] are looked at); `total` is the upload's full length when known.
pub fn sniff(head: &[u8], total: Option<u64>) -> Verdict {
    let head = &head[..head.len().min(WINDOW)];
    if let Some(m) = media(head) {
        return Verdict::Media(m);
    }
    if let Some(n) = not_media(head) {
        return Verdict::NotMedia(n);
    }
    let window = total.map_or(WINDOW, |t| t.min(WINDOW as u64) as usize);
    if head.len() < window {
        return Verdict::NeedMore;
    }
    if head.len() >= MIN_TEXT && is_text(head) {
        let t = String::from_utf8_lossy(head);
        let t = t.trim_start_matches('\u{FEFF}').trim_start();
        let what = if t.starts_with('<') {
            "HTML or XML"
        } else if t.starts_with('{') || t.starts_with('[') {
            "JSON"
        } else if t.starts_with("#EXTM3U") {
            "an HLS playlist"
        } else {
            "text"
        };
        return Verdict::NotMedia(what);
    }
    Verdict::Unknown
}

/// Collects the leading bytes of an upload as they stream and judges them once enough
/// have arrived.
#[derive(Debug)]
pub(crate) struct Sniffer {
    head: Vec<u8>,
    total: Option<u64>,
    decided: bool,
}

impl Sniffer {
    /// `head`: the bytes already stored before this request (only those within the window
    /// matter); `total`: the declared length, if any.
    pub(crate) fn new(head: Vec<u8>, total: Option<u64>) -> Self {
        let decided = head.len() >= WINDOW;
        Self {
            head,
            total,
            decided,
        }
    }

    /// No sniffing: a partial upload of a concatenation starts anywhere in the file, so
    /// its first bytes say nothing; the final upload's head is judged instead.
    pub(crate) fn skipped() -> Self {
        Self {
            head: Vec::new(),
            total: None,
            decided: true,
        }
    }

    /// Feed the next bytes; `Err(what)` as soon as the upload is certainly not media.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<(), &'static str> {
        if self.decided {
            return Ok(());
        }
        let take = (WINDOW - self.head.len()).min(chunk.len());
        self.head.extend_from_slice(&chunk[..take]);
        self.judge(self.total)
    }

    /// The body ended: with no declared length, its end is the upload's end.
    pub(crate) fn finish(&mut self, total_if_unknown: u64) -> Result<(), &'static str> {
        if self.decided {
            return Ok(());
        }
        self.judge(Some(self.total.unwrap_or(total_if_unknown)))
    }

    fn judge(&mut self, total: Option<u64>) -> Result<(), &'static str> {
        match sniff(&self.head, total) {
            Verdict::NotMedia(what) => Err(what),
            Verdict::NeedMore => Ok(()),
            Verdict::Media(_) | Verdict::Unknown => {
                self.decided = true;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(start: &[u8]) -> Vec<u8> {
        let mut v = start.to_vec();
        v.resize(WINDOW, 0x80);
        v
    }

    #[test]
    fn containers_are_media() {
        let cases: [(&[u8], &str); 8] = [
            (b"\x00\x00\x00\x20ftypisom", "mp4"),
            (b"\x00\x00\x00\x14ftypqt  ", "mp4"),
            (b"\x1A\x45\xDF\xA3\x9F\x42\x86\x81", "matroska"),
            (b"RIFF\x10\x00\x00\x00AVI LIST", "avi"),
            (b"FLV\x01\x05\x00\x00\x00", "flv"),
            (b"OggS\x00\x02\x00\x00", "ogg"),
            (b"\x00\x00\x01\xBA\x44\x00", "mpeg-ps"),
            (b"\x00\x00\x00\x08wide\x00", "mp4"),
        ];
        for (start, name) in cases {
            assert_eq!(sniff(start, None), Verdict::Media(name), "{start:?}");
        }
        let mut ts = vec![0u8; 400];
        ts[0] = 0x47;
        ts[188] = 0x47;
        assert_eq!(sniff(&ts, None), Verdict::Media("mpeg-ts"));
        let mut m2ts = vec![0u8; 400];
        m2ts[4] = 0x47;
        m2ts[196] = 0x47;
        assert_eq!(sniff(&m2ts, None), Verdict::Media("mpeg-ts"));
    }

    #[test]
    fn obvious_non_media_is_refused() {
        for (start, what) in [
            (&b"\x89PNG\r\n\x1a\n"[..], "a PNG image"),
            (b"\xFF\xD8\xFF\xE0", "a JPEG image"),
            (b"%PDF-1.7", "a PDF document"),
            (b"PK\x03\x04", "a ZIP archive"),
            (b"\x7FELF\x02\x01", "an ELF executable"),
            (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "a WebP image"),
        ] {
            assert_eq!(sniff(&padded(start), None), Verdict::NotMedia(what));
        }
        let text = "These are not the frames you are looking for.\n".repeat(20);
        assert_eq!(sniff(text.as_bytes(), None), Verdict::NotMedia("text"));
        let html = format!("<!doctype html><html>{}</html>", "é".repeat(300));
        assert_eq!(
            sniff(html.as_bytes(), None),
            Verdict::NotMedia("HTML or XML")
        );
        let json = format!("  {{\"a\": [{}]}}", "1,".repeat(300));
        assert_eq!(sniff(json.as_bytes(), None), Verdict::NotMedia("JSON"));
    }

    #[test]
    fn undecidable_input_is_accepted_or_waits() {
        // Random-looking bytes: not recognisable either way.
        let noise: Vec<u8> = (0..WINDOW as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert_eq!(sniff(&noise, None), Verdict::Unknown);
        // Text needs the whole window (or the whole upload) before it is judged…
        assert_eq!(sniff(b"hello there, this is text", None), Verdict::NeedMore);
        assert_eq!(
            sniff(b"hello there, this is text", Some(25)),
            Verdict::NotMedia("text")
        );
        // …and tiny uploads are left to the worker.
        assert_eq!(sniff(b"abcdefghijkl", Some(12)), Verdict::Unknown);
        // A control character (NUL) makes it binary.
        let mut bin = b"abc".repeat(200);
        bin[300] = 0;
        assert_eq!(sniff(&bin, None), Verdict::Unknown);
    }

    #[test]
    fn the_verdict_does_not_depend_on_how_the_body_is_cut() {
        let text = "plain words, no video\n".repeat(40);
        for cut in [1, 7, 100, 511, 512, 900] {
            let mut s = Sniffer::new(Vec::new(), Some(text.len() as u64));
            let (a, b) = text.as_bytes().split_at(cut.min(text.len()));
            let r = s.feed(a).and_then(|_| s.feed(b));
            assert_eq!(r, Err("text"), "cut at {cut}");
        }
        // Resumed after 10 bytes were stored by an earlier request.
        let mut s = Sniffer::new(text.as_bytes()[..10].to_vec(), Some(text.len() as u64));
        assert_eq!(s.feed(&text.as_bytes()[10..]), Err("text"));
        // Unknown length: judged at the end of the body.
        let mut s = Sniffer::new(Vec::new(), None);
        assert_eq!(s.feed(b"short text file here"), Ok(()));
        assert_eq!(s.finish(20), Err("text"));
        // Media is decided once and later bytes are not looked at.
        let mut s = Sniffer::new(Vec::new(), None);
        s.feed(b"\x00\x00\x00\x20ftypisom").unwrap();
        s.feed(&"text".repeat(200).into_bytes()).unwrap();
        s.finish(900).unwrap();
    }
}
