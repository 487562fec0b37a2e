//! A structural check of MP4/MOV files (ISO base media file format): walk the top-level
//! boxes and verify that each one fits in the file and that the index (`moov`) is present.
//!
//! Why not leave this to GStreamer: an interrupted upload is the most common bad input, and
//! on GStreamer 1.22 the demuxer's "no playable streams" error for an MP4 cut before its
//! `moov` is sometimes lost under load (measured: about 1 run in 12 with four parallel
//! jobs), leaving the discoverer to time out and the transcode to stall. A cut "faststart"
//! MP4 even decodes cleanly to a normal end of stream. Reading a few box headers answers
//! both cases instantly and deterministically, with a message users understand.

use std::io::{Read, Seek, SeekFrom};

/// The outcome of [`scan_top_level_boxes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BoxScan {
    /// The file does not start like an ISO BMFF file: not ours to judge.
    NotIsoBmff,
    /// Every top-level box fits in the file and a `moov` box is present.
    Complete,
    /// The boxes fit but there is no `moov` (the index is written last by most encoders).
    MissingMoov,
    /// A box claims more bytes than the file has left: the file was cut short.
    Truncated {
        /// Four-character type of the box that runs past the end.
        box_type: String,
        /// How many bytes are missing.
        missing_bytes: u64,
    },
    /// A box header is impossible (size smaller than its own header).
    Invalid(String),
}

/// Box types that can open an MP4/MOV/3GP file: `ftyp` for ISO files, the others for old
/// QuickTime files without one.
const FIRST_BOX_TYPES: &[&[u8; 4]] = &[
    b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp",
];

/// Upper bound on top-level boxes walked, so a crafted file cannot keep us busy.
const MAX_BOXES: usize = 100_000;

/// Walks the top-level boxes of `reader` (whose total length is `len`).
///
/// Reads only box headers (8 or 16 bytes each), seeking over the payloads.
pub(crate) fn scan_top_level_boxes<R: Read + Seek>(
    reader: &mut R,
    len: u64,
) -> std::io::Result<BoxScan> {
    let mut offset = 0u64;
    let mut saw_moov = false;
    for index in 0..MAX_BOXES {
        // Fewer than 8 bytes left cannot hold a box: trailing padding, ignore it (a file
        // too short for even one box is not an MP4 at all).
        if len.saturating_sub(offset) < 8 {
            if index == 0 {
                return Ok(BoxScan::NotIsoBmff);
            }
            break;
        }
        reader.seek(SeekFrom::Start(offset))?;
        let mut header = [0u8; 8];
        reader.read_exact(&mut header)?;
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let box_type: [u8; 4] = [header[4], header[5], header[6], header[7]];
        if index == 0 && !FIRST_BOX_TYPES.contains(&&box_type) {
            return Ok(BoxScan::NotIsoBmff);
        }
        let type_name = String::from_utf8_lossy(&box_type).into_owned();
        let (size, header_len) = match size32 {
            // Size 0: the box extends to the end of the file.
            0 => (len - offset, 8),
            // Size 1: a 64-bit size follows the type.
            1 => {
                if len - offset < 16 {
                    return Ok(BoxScan::Truncated {
                        box_type: type_name,
                        missing_bytes: 16 - (len - offset),
                    });
                }
                let mut large = [0u8; 8];
                reader.read_exact(&mut large)?;
                (u64::from_be_bytes(large), 16)
            }
            n => (u64::from(n), 8),
        };
        if size < header_len {
            return Ok(BoxScan::Invalid(format!(
                "box '{type_name}' at byte {offset} declares an impossible size of {size}"
            )));
        }
        let end = offset.saturating_add(size);
        if end > len {
            return Ok(BoxScan::Truncated {
                box_type: type_name,
                missing_bytes: end - len,
            });
        }
        saw_moov |= &box_type == b"moov";
        offset = end;
        if offset == len {
            break;
        }
    }
    Ok(if saw_moov {
        BoxScan::Complete
    } else {
        BoxScan::MissingMoov
    })
}

/// Human-readable size: "1.2 MB", "830 kB", "12 bytes".
pub(crate) fn human_bytes(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{} kB", n / 1_000)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn boxed(kind: &[u8; 4], payload_len: usize) -> Vec<u8> {
        let mut b = ((payload_len + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend(std::iter::repeat_n(0u8, payload_len));
        b
    }

    fn scan(bytes: &[u8]) -> BoxScan {
        scan_top_level_boxes(&mut Cursor::new(bytes), bytes.len() as u64).expect("in-memory read")
    }

    #[test]
    fn complete_files_pass_wherever_the_index_is() {
        let faststart = [
            boxed(b"ftyp", 16),
            boxed(b"moov", 100),
            boxed(b"mdat", 1000),
        ]
        .concat();
        assert_eq!(scan(&faststart), BoxScan::Complete);
        let index_last = [
            boxed(b"ftyp", 16),
            boxed(b"free", 0),
            boxed(b"mdat", 1000),
            boxed(b"moov", 100),
        ]
        .concat();
        assert_eq!(scan(&index_last), BoxScan::Complete);
        // Trailing bytes too short to be a box are tolerated.
        let padded = [index_last.clone(), vec![0, 0, 0]].concat();
        assert_eq!(scan(&padded), BoxScan::Complete);
    }

    #[test]
    fn a_cut_file_reports_the_box_it_ends_in() {
        let index_last = [
            boxed(b"ftyp", 16),
            boxed(b"mdat", 1000),
            boxed(b"moov", 100),
        ]
        .concat();
        // Cut in the middle of mdat: 24 bytes ftyp + 8 header + 500 payload kept.
        assert_eq!(
            scan(&index_last[..24 + 8 + 500]),
            BoxScan::Truncated {
                box_type: "mdat".into(),
                missing_bytes: 500
            }
        );
        let faststart = [
            boxed(b"ftyp", 16),
            boxed(b"moov", 100),
            boxed(b"mdat", 1000),
        ]
        .concat();
        assert_eq!(
            scan(&faststart[..faststart.len() - 10]),
            BoxScan::Truncated {
                box_type: "mdat".into(),
                missing_bytes: 10
            }
        );
        // Cut exactly between mdat and moov: every box fits, the index is simply absent.
        assert_eq!(scan(&index_last[..24 + 1008]), BoxScan::MissingMoov);
    }

    #[test]
    fn size_zero_runs_to_the_end_and_size_one_is_64_bit() {
        let mut to_end = boxed(b"ftyp", 8);
        to_end.extend_from_slice(&boxed(b"moov", 8));
        to_end.extend_from_slice(&[0, 0, 0, 0]);
        to_end.extend_from_slice(b"mdat");
        to_end.extend(std::iter::repeat_n(1u8, 50));
        assert_eq!(scan(&to_end), BoxScan::Complete);

        let mut large = boxed(b"ftyp", 8);
        large.extend_from_slice(&1u32.to_be_bytes());
        large.extend_from_slice(b"mdat");
        large.extend_from_slice(&(16u64 + 40).to_be_bytes());
        large.extend(std::iter::repeat_n(0u8, 40));
        large.extend_from_slice(&boxed(b"moov", 4));
        assert_eq!(scan(&large), BoxScan::Complete);
        // The same 64-bit box cut short.
        assert_eq!(
            scan(&large[..16 + 16 + 20]),
            BoxScan::Truncated {
                box_type: "mdat".into(),
                missing_bytes: 20
            }
        );
    }

    #[test]
    fn other_formats_and_nonsense_are_recognised() {
        assert_eq!(
            scan(b"\x1aE\xdf\xa3 matroska header......"),
            BoxScan::NotIsoBmff
        );
        assert_eq!(scan(b"hello, this is text"), BoxScan::NotIsoBmff);
        assert_eq!(scan(b""), BoxScan::NotIsoBmff);
        assert_eq!(scan(b"ftyp"), BoxScan::NotIsoBmff);
        let mut bad = boxed(b"ftyp", 8);
        bad.extend_from_slice(&4u32.to_be_bytes());
        bad.extend_from_slice(b"moov");
        assert_eq!(
            scan(&bad),
            BoxScan::Invalid("box 'moov' at byte 16 declares an impossible size of 4".into())
        );
    }

    #[test]
    fn sizes_are_readable() {
        assert_eq!(human_bytes(12), "12 bytes");
        assert_eq!(human_bytes(830_123), "830 kB");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
    }
}
