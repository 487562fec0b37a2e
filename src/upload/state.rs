//! The resume state file: which unfinished upload URL belongs to which local file.
//!
//! A file is identified by (server, canonical path, size, mtime): if any of them changes,
//! the bytes on the server may no longer be a prefix of the file, so the old upload must not
//! be continued. The file on disk is only ever replaced whole (temp file + rename), so a
//! reader never sees half of it, and every change is applied under an advisory lock to the
//! state as it is on disk at that moment ("merge on write"), so concurrent runs never lose
//! each other's entries. The lock is `flock`-style: the kernel drops it when the process
//! dies, so a killed run never leaves the next one waiting.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::UploadError;

/// Version of the file's layout; a file with another version is treated as empty.
const STATE_VERSION: u32 = 1;

/// What identifies one local file on one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateKey {
    /// The server base URL, normalised by [`normalize_server`].
    pub server: String,
    /// The canonical (absolute, symlink-free) path of the file.
    pub path: String,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// One unfinished upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub key: StateKey,
    /// The absolute tus upload URL (the server's `Location`).
    pub url: String,
    /// When the upload was created (seconds since the Unix epoch), for people reading it.
    #[serde(default)]
    pub created_at: u64,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    #[serde(default)]
    pub uploads: Vec<Entry>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            uploads: Vec::new(),
        }
    }
}

/// One change to the state, applied to whatever is on disk when it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Remember a new upload. Replaces every entry for the same file on the same server,
    /// whatever its size or mtime was: an older version of the file can never be resumed
    /// into this one, so keeping it would only make the file grow.
    Upsert(Entry),
    /// Forget an upload (finished, or gone from the server). Only the entry with this URL
    /// goes: if a concurrent run has meanwhile recorded a newer upload for the same file,
    /// that one stays.
    Remove { key: StateKey, url: String },
}

impl State {
    /// The upload URL remembered for `key`, if any.
    pub fn lookup(&self, key: &StateKey) -> Option<&str> {
        self.uploads
            .iter()
            .rev()
            .find(|e| &e.key == key)
            .map(|e| e.url.as_str())
    }

    /// Apply one change (pure; the caller takes care of locking and writing).
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Upsert(entry) => {
                self.uploads.retain(|e| {
                    !(e.key.server == entry.key.server && e.key.path == entry.key.path)
                });
                self.uploads.push(entry);
            }
            Change::Remove { key, url } => {
                self.uploads.retain(|e| !(e.key == key && e.url == url));
            }
        }
    }
}

/// The server as it appears in keys: scheme and host lower-cased, no trailing slash, so
/// `HTTP://Host:8080/` and `http://host:8080` share their entries.
pub fn normalize_server(server: &str) -> String {
    let s = server.trim().trim_end_matches('/');
    match s.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            format!(
                "{}://{}{}",
                scheme.to_ascii_lowercase(),
                authority.to_ascii_lowercase(),
                path
            )
        }
        None => s.to_string(),
    }
}

/// Parse the file's text; anything unreadable counts as empty, because a damaged state
/// file must never stop uploads (the worst outcome is starting an upload over).
pub fn parse_state(text: &str) -> State {
    match serde_json::from_str::<State>(text) {
        Ok(s) if s.version == STATE_VERSION => s,
        _ => State::default(),
    }
}

/// The default location: `$XDG_STATE_HOME/sluice/uploads.json`, else
/// `~/.local/state/sluice/uploads.json` (the XDG base directory rules).
pub fn default_path(xdg_state_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    // The XDG spec says a relative value is invalid and must be ignored.
    if let Some(x) = xdg_state_home.filter(|x| Path::new(x).is_absolute()) {
        return Some(Path::new(x).join("sluice").join("uploads.json"));
    }
    home.filter(|h| !h.is_empty()).map(|h| {
        Path::new(h)
            .join(".local")
            .join("state")
            .join("sluice")
            .join("uploads.json")
    })
}

/// The state file and its lock file next to it.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn err(&self, e: impl std::fmt::Display) -> UploadError {
        UploadError::State {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn read(&self) -> Result<State, UploadError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => Ok(parse_state(&text)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The remembered upload URL for `key`. No lock is needed: the file is only ever
    /// replaced whole by a rename.
    pub async fn lookup(&self, key: &StateKey) -> Result<Option<String>, UploadError> {
        let (me, key) = (self.clone(), key.clone());
        tokio::task::spawn_blocking(move || Ok(me.read()?.lookup(&key).map(str::to_string)))
            .await
            .map_err(|e| self.err(e))?
    }

    /// Apply `change` to the file on disk, under the lock.
    pub async fn update(&self, change: Change) -> Result<(), UploadError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.update_blocking(change))
            .await
            .map_err(|e| self.err(e))?
    }

    fn update_blocking(&self, change: Change) -> Result<(), UploadError> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(|e| self.err(e))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lock_path())
            .map_err(|e| self.err(e))?;
        lock.lock().map_err(|e| self.err(e))?;
        let mut state = self.read()?;
        state.apply(change);
        let result = self.write_atomic(&dir, &state);
        // Dropping the handle releases the lock too; unlocking explicitly keeps the
        // window short if the caller holds on to anything.
        let _ = lock.unlock();
        result
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "uploads.json".into());
        name.push(".lock");
        self.path.with_file_name(name)
    }

    fn write_atomic(&self, dir: &Path, state: &State) -> Result<(), UploadError> {
        let text = serde_json::to_vec_pretty(state).map_err(|e| self.err(e))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            // The data must be on disk before the rename makes it the state file, or a
            // crash could leave an empty file under the real name.
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.err(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str, size: u64, mtime_ns: i64) -> StateKey {
        StateKey {
            server: "http://127.0.0.1:8080".into(),
            path: path.into(),
            size,
            mtime_ns,
        }
    }

    fn entry(k: StateKey, url: &str) -> Entry {
        Entry {
            key: k,
            url: url.into(),
            created_at: 1,
        }
    }

    #[test]
    fn lookup_needs_every_part_of_the_key() {
        let mut s = State::default();
        s.apply(Change::Upsert(entry(
            key("/a.mp4", 10, 5),
            "http://x/v1/uploads/A",
        )));
        assert_eq!(
            s.lookup(&key("/a.mp4", 10, 5)),
            Some("http://x/v1/uploads/A")
        );
        assert_eq!(s.lookup(&key("/a.mp4", 11, 5)), None);
        assert_eq!(s.lookup(&key("/a.mp4", 10, 6)), None);
        assert_eq!(s.lookup(&key("/b.mp4", 10, 5)), None);
        let mut other = key("/a.mp4", 10, 5);
        other.server = "https://elsewhere".into();
        assert_eq!(s.lookup(&other), None);
    }

    #[test]
    fn upsert_replaces_older_versions_of_the_same_file() {
        let mut s = State::default();
        s.apply(Change::Upsert(entry(key("/a.mp4", 10, 5), "u1")));
        s.apply(Change::Upsert(entry(key("/b.mp4", 10, 5), "u2")));
        s.apply(Change::Upsert(entry(key("/a.mp4", 20, 9), "u3")));
        let urls: Vec<_> = s.uploads.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(urls, ["u2", "u3"]);
    }

    #[test]
    fn remove_only_drops_the_matching_url() {
        let mut s = State::default();
        s.apply(Change::Upsert(entry(key("/a.mp4", 10, 5), "new")));
        // A concurrent run finished the *old* upload of the same file: ours stays.
        s.apply(Change::Remove {
            key: key("/a.mp4", 10, 5),
            url: "old".into(),
        });
        assert_eq!(s.uploads.len(), 1);
        s.apply(Change::Remove {
            key: key("/a.mp4", 10, 5),
            url: "new".into(),
        });
        assert!(s.uploads.is_empty());
    }

    #[test]
    fn changes_merge_with_what_is_on_disk() {
        // Two runs each read the file, then each applies its own change to the latest
        // version on disk: both entries survive.
        let mut on_disk = State::default();
        on_disk.apply(Change::Upsert(entry(key("/a.mp4", 1, 1), "ua")));
        let text = serde_json::to_string(&on_disk).unwrap_or_default();
        let mut run2 = parse_state(&text);
        run2.apply(Change::Upsert(entry(key("/b.mp4", 1, 1), "ub")));
        let text = serde_json::to_string(&run2).unwrap_or_default();
        let mut run1 = parse_state(&text);
        run1.apply(Change::Remove {
            key: key("/a.mp4", 1, 1),
            url: "ua".into(),
        });
        assert_eq!(run1.lookup(&key("/b.mp4", 1, 1)), Some("ub"));
        assert_eq!(run1.lookup(&key("/a.mp4", 1, 1)), None);
    }

    #[test]
    fn damaged_or_foreign_files_read_as_empty() {
        assert_eq!(parse_state(""), State::default());
        assert_eq!(
            parse_state("{\"version\": 1, \"uploads\": ["),
            State::default()
        );
        assert_eq!(parse_state("{\"version\": 99}"), State::default());
        assert_eq!(parse_state("[1,2]"), State::default());
    }

    #[test]
    fn server_normalisation() {
        assert_eq!(
            normalize_server("HTTP://Example.COM:8080/"),
            "http://example.com:8080"
        );
        assert_eq!(normalize_server("https://h/Prefix/"), "https://h/Prefix");
        assert_eq!(normalize_server("http://h"), "http://h");
    }

    #[test]
    fn default_location_follows_xdg() {
        assert_eq!(
            default_path(Some("/x/state"), Some("/home/u")),
            Some(PathBuf::from("/x/state/sluice/uploads.json"))
        );
        assert_eq!(
            default_path(Some("relative"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.local/state/sluice/uploads.json"))
        );
        assert_eq!(
            default_path(None, Some("/home/u")),
            Some(PathBuf::from("/home/u/.local/state/sluice/uploads.json"))
        );
        assert_eq!(default_path(None, None), None);
    }

    #[test]
    fn store_round_trip_on_disk() {
        let dir = std::env::temp_dir().join(format!("sluice-state-test-{}", std::process::id()));
        let store = StateStore::new(dir.join("nested").join("uploads.json"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let k = key("/a.mp4", 3, 4);
            assert_eq!(store.lookup(&k).await.ok().flatten(), None);
            store
                .update(Change::Upsert(entry(k.clone(), "u")))
                .await
                .expect("write");
            assert_eq!(store.lookup(&k).await.ok().flatten().as_deref(), Some("u"));
            store
                .update(Change::Remove {
                    key: k.clone(),
                    url: "u".into(),
                })
                .await
                .expect("write");
            assert_eq!(store.lookup(&k).await.ok().flatten(), None);
        });
        let leftovers: Vec<_> = fs::read_dir(dir.join("nested"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        // Only the state file and its lock: no temp files left behind.
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
        let _ = fs::remove_dir_all(&dir);
    }
}
