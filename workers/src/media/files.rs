//! Files the workers write for a web server or a later step to read: always whole.

use std::path::{Path, PathBuf};

/// Writes via a temporary file and a rename, so a web server never serves half a playlist.
pub(crate) fn write_atomically(
    path: &Path,
    contents: impl AsRef<[u8]>,
) -> Result<(), std::io::Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
