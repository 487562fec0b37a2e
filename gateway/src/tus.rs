//! tus request headers, parsed where the tus handler lives: `Upload-Metadata` (its file
//! name) and `Upload-Checksum` (the checksum extension). The engine gets typed values.

use base64::Engine as _;
use sluice_engine::UploadMetadata;
use sluice_engine::checksum::{ALGORITHMS, Algorithm, Checksum};

/// Parse `Upload-Metadata` (`key base64,key2 base64`): keep the header, decode `filename`.
/// Malformed pairs are an error, an empty header is not; a key without a value is allowed
/// by tus. The file name loses control characters and is cut at 255 characters.
pub(crate) fn parse_metadata(header: &str) -> Result<UploadMetadata, String> {
    let mut filename = None;
    for pair in header.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let mut it = pair.splitn(2, ' ');
        let key = it.next().unwrap_or_default();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("invalid Upload-Metadata key {key:?}"));
        }
        let value = it.next().unwrap_or("").trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| format!("Upload-Metadata value for {key:?} is not base64"))?;
        if key == "filename" {
            let name = String::from_utf8(decoded)
                .map_err(|_| "Upload-Metadata filename is not UTF-8".to_string())?;
            filename = Some(name.chars().filter(|c| !c.is_control()).take(255).collect());
        }
    }
    Ok(UploadMetadata {
        header: header.to_string(),
        filename,
    })
}

/// Parse `Upload-Checksum: <algorithm> <base64 digest>`.
pub(crate) fn parse_checksum(header: &str) -> Result<Checksum, String> {
    let (name, value) = header
        .trim()
        .split_once(' ')
        .ok_or("Upload-Checksum must be '<algorithm> <base64 digest>'")?;
    let algorithm = Algorithm::from_name(name).ok_or_else(|| {
        format!(
            "unsupported checksum algorithm {:?}; use one of {ALGORITHMS}",
            name.to_ascii_lowercase()
        )
    })?;
    let expected = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| "the Upload-Checksum digest is not base64".to_string())?;
    let len = algorithm.digest_len();
    if expected.len() != len {
        return Err(format!(
            "a {name} digest has {len} bytes, this one has {}",
            expected.len()
        ));
    }
    Ok(Checksum {
        algorithm,
        expected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filename(header: &str) -> Result<Option<String>, String> {
        parse_metadata(header).map(|m| m.filename)
    }

    #[test]
    fn upload_metadata() {
        assert_eq!(filename(""), Ok(None));
        assert_eq!(
            filename("filename Y2xpcC5tcDQ=,filetype dmlkZW8vbXA0"),
            Ok(Some("clip.mp4".to_string()))
        );
        // A key without a value is allowed by tus.
        assert_eq!(filename("is_confidential"), Ok(None));
        assert!(filename("filename !!!").is_err());
        assert!(filename("filename ***").is_err());
        assert_eq!(
            parse_metadata("filename YS5tcDQ=").unwrap(),
            UploadMetadata {
                header: "filename YS5tcDQ=".into(),
                filename: Some("a.mp4".into())
            }
        );
    }

    #[test]
    fn upload_checksum() {
        // sha1("hello") = aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d
        let c = parse_checksum("sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00=").unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha1);
        assert_eq!(
            c.expected,
            b"\xaa\xf4\xc6\x1d\xdc\xc5\xe8\xa2\xda\xbe\xde\x0f\x3b\x48\x2c\xd9\xae\xa9\x43\x4d"
        );
        // md5("hello") = 5d41402abc4b2a76b9719d911017c592
        let c = parse_checksum("MD5 XUFAKrxLKna5cZ2REBfFkg==").unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        for bad in [
            "sha1",
            "crc32 AAAA",
            "sha1 !!!",
            "sha1 AAAA",
            "md5 qvTGHdzF6KLavt4PO0gs2a6pQ00=",
        ] {
            assert!(parse_checksum(bad).is_err(), "{bad}");
        }
    }
}
