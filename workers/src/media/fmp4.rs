//! Fragmented-MP4 segments: `splitmuxsink` restarts its muxer for every segment, so each
//! file `isofmp4mux` writes is a whole fragmented MP4 (`ftyp`, `moov`, then `moof`+`mdat`).
//! HLS wants the initialisation section once (`EXT-X-MAP`) and bare fragments as segments:
//! [`split_init`] keeps the first file's `ftyp`+`moov` as `init.mp4` and strips them from
//! every segment, checking that each file's codec configuration is the same.

use std::path::{Path, PathBuf};

use super::MediaError;

/// Name of a rendition's initialisation segment.
pub const INIT_NAME: &str = "init.mp4";

/// Top-level boxes of an ISO-BMFF file: (type, start, end) byte ranges.
fn top_level_boxes(data: &[u8]) -> Result<Vec<([u8; 4], usize, usize)>, String> {
    let mut out = vec![];
    let mut pos = 0usize;
    while pos < data.len() {
        if data.len() - pos < 8 {
            return Err(format!("truncated box header at byte {pos}"));
        }
        let size32 = u32::from_be_bytes(data[pos..pos + 4].try_into().expect("4 bytes"));
        let kind: [u8; 4] = data[pos + 4..pos + 8].try_into().expect("4 bytes");
        let size = match size32 {
            0 => data.len() - pos,
            1 => {
                if data.len() - pos < 16 {
                    return Err(format!("truncated 64-bit box size at byte {pos}"));
                }
                u64::from_be_bytes(data[pos + 8..pos + 16].try_into().expect("8 bytes")) as usize
            }
            n => n as usize,
        };
        if size < 8 || size > data.len() - pos {
            return Err(format!(
                "box {:?} at byte {pos} has an impossible size {size}",
                String::from_utf8_lossy(&kind)
            ));
        }
        out.push((kind, pos, pos + size));
        pos += size;
    }
    Ok(out)
}

/// Split one file into its initialisation section (`ftyp` + `moov`) and the rest.
pub(crate) fn split(data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut init = vec![];
    let mut media = vec![];
    for (kind, start, end) in top_level_boxes(data)? {
        match &kind {
            b"ftyp" | b"moov" => init.extend_from_slice(&data[start..end]),
            _ => media.extend_from_slice(&data[start..end]),
        }
    }
    if !init.windows(4).any(|w| w == b"moov") {
        return Err("no moov box".into());
    }
    if !media.windows(4).any(|w| w == b"moof") {
        return Err("no moof box".into());
    }
    Ok((init, media))
}

/// Read an MPEG-4 descriptor header (tag, then a length in 7-bit groups): (tag, body).
fn descriptor(data: &[u8]) -> Option<(u8, &[u8])> {
    let (&tag, mut rest) = data.split_first()?;
    let mut len = 0usize;
    for _ in 0..4 {
        let (&b, r) = rest.split_first()?;
        rest = r;
        len = (len << 7) | usize::from(b & 0x7f);
        if b & 0x80 == 0 {
            return rest.get(..len).map(|body| (tag, body));
        }
    }
    None
}

/// The AudioSpecificConfig inside an `esds` box body (after version and flags): the part of
/// the AAC description that matters, without the bit rates the muxer measured per file.
fn audio_specific_config(esds_body: &[u8]) -> Option<&[u8]> {
    let (tag, es) = descriptor(esds_body.get(4..)?)?;
    if tag != 0x03 {
        return None;
    }
    let flags = *es.get(2)?;
    let mut at = 3;
    if flags & 0x80 != 0 {
        at += 2; // dependsOn_ES_ID
    }
    if flags & 0x40 != 0 {
        at += 1 + usize::from(*es.get(at)?); // URL
    }
    if flags & 0x20 != 0 {
        at += 2; // OCR_ES_ID
    }
    let (tag, dc) = descriptor(es.get(at..)?)?;
    if tag != 0x04 {
        return None;
    }
    // objectTypeIndication, streamType, bufferSizeDB (3), maxBitrate (4), avgBitrate (4).
    let (tag, asc) = descriptor(dc.get(13..)?)?;
    (tag == 0x05).then_some(asc)
}

/// The codec configuration in an init section: the `avcC` box (H.264 parameter sets) and
/// the AAC AudioSpecificConfig. Other fields legitimately differ between two files of one
/// stream (times, durations, bit rates measured per file).
fn codec_configs(init: &[u8]) -> Vec<&[u8]> {
    let mut out = vec![];
    for kind in [b"avcC", b"esds"] {
        let mut i = 0;
        while let Some(off) = init[i..].windows(4).position(|w| w == kind) {
            let at = i + off;
            if at >= 4 {
                let size =
                    u32::from_be_bytes(init[at - 4..at].try_into().expect("4 bytes")) as usize;
                if size >= 8 && at - 4 + size <= init.len() {
                    let boxed = &init[at - 4..at - 4 + size];
                    let config = match kind {
                        b"esds" => audio_specific_config(&boxed[8..]).unwrap_or(boxed),
                        _ => boxed,
                    };
                    out.push(config);
                }
            }
            i = at + 4;
        }
    }
    out
}

/// Turn a rendition's whole-MP4 segment files into `init.mp4` + bare fragments, in place.
pub fn split_init(dir: &Path, segments: &[PathBuf]) -> Result<(), MediaError> {
    let mut first_init: Option<Vec<u8>> = None;
    for path in segments {
        let data = std::fs::read(path)?;
        let (init, media) = split(&data).map_err(|e| {
            MediaError::Pipeline(format!("fMP4 segment {} is malformed: {e}", path.display()))
        })?;
        match &first_init {
            None => first_init = Some(init),
            Some(first) if codec_configs(first) != codec_configs(&init) => {
                return Err(MediaError::Pipeline(format!(
                    "fMP4 segment {} changes the codec configuration mid-stream",
                    path.display()
                )));
            }
            Some(_) => {}
        }
        super::files::write_atomically(path, media)?;
    }
    if let Some(init) = first_init {
        super::files::write_atomically(&dir.join(INIT_NAME), init)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn splits_header_from_fragments() {
        let ftyp = bx(b"ftyp", b"iso6");
        let moov = bx(b"moov", &bx(b"stsd", &bx(b"avcC", b"sps")));
        let moof = bx(b"moof", b"m");
        let mdat = bx(b"mdat", b"frames");
        let file = [ftyp.clone(), moov.clone(), moof.clone(), mdat.clone()].concat();
        let (init, media) = split(&file).unwrap();
        assert_eq!(init, [ftyp, moov].concat());
        assert_eq!(media, [moof, mdat].concat());
        assert_eq!(codec_configs(&init), vec![&bx(b"avcC", b"sps")[..]]);
    }

    #[test]
    fn aac_config_ignores_measured_bit_rates() {
        // An esds body as isofmp4mux writes it, with and without bit rates.
        let plain = [
            0, 0, 0, 0, 0x03, 0x1c, 0, 1, 0, 0x04, 0x14, 0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0x05, 0x05, 0x11, 0x88, 0x56, 0xe5, 0, 0x06, 0x01, 0x02,
        ];
        let mut rated = plain;
        rated[17..24].copy_from_slice(&[0x02, 0x68, 0xb3, 0x00, 0x01, 0xe1, 0x1e]);
        assert_eq!(
            audio_specific_config(&plain),
            Some(&[0x11, 0x88, 0x56, 0xe5, 0][..])
        );
        assert_eq!(audio_specific_config(&rated), audio_specific_config(&plain));
        assert_eq!(audio_specific_config(&[0, 0, 0, 0, 0x09]), None);
    }

    #[test]
    fn refuses_truncated_or_headerless_files() {
        let moof = bx(b"moof", b"m");
        assert!(split(&moof).unwrap_err().contains("no moov"));
        let mut file = [bx(b"ftyp", b"iso6"), bx(b"moov", b"x"), moof].concat();
        file.truncate(file.len() - 1);
        assert!(split(&file).unwrap_err().contains("impossible size"));
        assert!(split(&[0, 0, 0]).unwrap_err().contains("truncated"));
    }
}
