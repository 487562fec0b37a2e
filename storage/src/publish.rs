//! Publishing a set of objects so that a reader never sees a reference to a missing one.
//!
//! HLS names objects from other objects: a master playlist names media playlists, which
//! name segments. Publishing in rank order (segments and everything else, then media
//! playlists, then `master.m3u8`), each rank whole before the next starts, means every
//! playlist a reader can fetch names only objects already in place. Inside a rank the
//! objects go up concurrently: each is one round trip (a PUT, or a CopyObject on S3).
//!
//! The transcode worker (staged output → published prefix), the one-rendition re-run and
//! the live recording published as pushed all go through [`Storage::publish`].

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::{Result, Storage, keys};

/// Objects of one rank go up this many at a time.
pub const PUBLISH_CONCURRENCY: usize = 16;

/// Where a published object's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A server-side copy of another object of the same store.
    Object(String),
    /// A local file.
    File(PathBuf),
    /// Bytes in memory (a playlist written just now).
    Bytes(Bytes),
}

/// The rank of an object by its name: 0 for segments and everything else, 1 for media
/// playlists, 2 for the master playlist.
pub fn rank(rel: &str) -> u8 {
    if rel == "master.m3u8" {
        2
    } else if rel.ends_with(".m3u8") {
        1
    } else {
        0
    }
}

impl Storage {
    /// Put every `(rel, source)` under `prefix`, rank by rank (see the module docs). Each
    /// `rel` is validated as a relative key. Safe to repeat: a later attempt overwrites.
    pub async fn publish(&self, prefix: &str, mut objects: Vec<(String, Source)>) -> Result<()> {
        for (rel, _) in &objects {
            keys::validate_relative(rel)?;
        }
        objects.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
        let mut rest = objects.into_iter().peekable();
        while let Some((first, _)) = rest.peek() {
            let r = rank(first);
            let mut this = vec![];
            while let Some(next) = rest.next_if(|(rel, _)| rank(rel) == r) {
                this.push(next);
            }
            let keys: Arc<[String]> = this
                .iter()
                .map(|(rel, _)| format!("{prefix}{rel}"))
                .collect();
            // Owned keys and a storage handle per object: the future stays `Send` and
            // `'static` for the worker task that awaits it.
            futures::stream::iter(this.into_iter().map(|(rel, source)| {
                let (storage, key) = (self.clone(), format!("{prefix}{rel}"));
                async move {
                    match source {
                        Source::Object(from) => storage.copy(&from, &key).await,
                        Source::File(path) => storage.put_file(&key, &path).await.map(|_| ()),
                        Source::Bytes(b) => storage.put(&key, b).await,
                    }
                }
            }))
            .buffer_unordered(PUBLISH_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
            // Nobody listening is no error.
            let _ = self.published.send(keys);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::rank;

    #[test]
    fn the_master_goes_last_and_media_playlists_before_it() {
        assert_eq!(rank("720p/seg_00001.ts"), 0);
        assert_eq!(rank("720p/init.mp4"), 0);
        assert_eq!(rank("thumbs/storyboard.vtt"), 0);
        assert_eq!(rank("720p/index.m3u8"), 1);
        assert_eq!(rank("master.m3u8"), 2);
        // Only the top-level master is the master.
        assert_eq!(rank("x/master.m3u8"), 1);
    }
}
