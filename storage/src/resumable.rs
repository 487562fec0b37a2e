//! Resumable writes: appending to an unfinished object, request after request, from the
//! offset the caller last committed.
//!
//! The storage crate knows nothing of the metadata store. A writer therefore never commits
//! anything: it reports [`Checkpoint`]s, each a durable state the caller must record (fenced
//! by whatever excludes other writers) before telling anyone about the bytes, and the next
//! writer is opened from what was recorded. Bytes written past the last recorded checkpoint
//! by a request that died are dropped (or ignored) by the next writer, so the object is
//! always exactly the bytes the caller was told were stored.
//!
//! Two implementations, one per kind of hot tier:
//!
//! - [`FileWrite`]: a plain file (in the engine's uploads directory). Opening truncates it to
//!   the committed offset; bytes are appended, their writeback started as they stream, and
//!   synced at the end of the request: one checkpoint per request. Finished by moving the
//!   file into the store ([`Storage::put_file_move`]: a rename on a local hot tier).
//! - [`MultipartWrite`]: an S3 multipart upload of the object's key, resumable from any
//!   process. Bytes fill a part-sized buffer (prefilled from the committed *tail*); each full
//!   part is sent at once and is durable: a checkpoint (its parts, the offset at its end).
//!   At the end of a request the rest goes to a new tail object ([`keys::upload_tail`],
//!   named by its end offset so the committed one is never overwritten), or, when it ends
//!   the object, becomes the last part. Finished by completing the multipart upload from the
//!   recorded parts ([`Storage::complete_multipart`]).

use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::{Error, Result, Storage, keys};

/// While a request streams into a file, ask the kernel to start writing back every this
/// many bytes, so the `fsync` at the end finds little left to do (it still runs).
const WRITEBACK_EVERY: u64 = 8 << 20;

/// One part of a multipart upload, as the caller records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// 0-based (S3 part number `index + 1`).
    pub index: usize,
    pub etag: String,
    pub size: u64,
}

/// A durable state of a resumable write, for the caller to record before it tells anyone
/// about the bytes (and before it calls [`ResumableWrite::recorded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// Every byte of the file up to `offset` is on disk.
    File { offset: u64 },
    /// `parts` (added to those recorded before; an index recorded again replaces its part)
    /// and the bytes past the last part, in object `tail` (`None`: no bytes past it) are
    /// durable, up to `offset`.
    Multipart {
        parts: Vec<Part>,
        tail: Option<String>,
        offset: u64,
    },
}

impl Checkpoint {
    /// The object's length at this checkpoint.
    pub fn offset(&self) -> u64 {
        match self {
            Checkpoint::File { offset } | Checkpoint::Multipart { offset, .. } => *offset,
        }
    }
}

/// Appending to an unfinished object from its committed offset (see the module docs).
pub trait ResumableWrite: Send {
    /// The offset this writer resumed from: the bytes it found stored (a file is truncated
    /// to the offset it was opened at; a multipart upload holds its parts and tail).
    fn resumed(&self) -> u64;

    /// The offset after every byte appended so far.
    fn written(&self) -> u64;

    /// The stored bytes, when all of them lie within the first `window` bytes of the object
    /// (content sniffing looks at the head of an upload); empty otherwise.
    fn head(&mut self, window: usize) -> impl Future<Output = Result<Vec<u8>>> + Send;

    /// Append bytes. They are durable only once a checkpoint says so.
    fn append(&mut self, data: &[u8]) -> impl Future<Output = Result<()>> + Send;

    /// What became durable while appending and was not reported yet (S3: whole parts
    /// sent). Never any I/O. A caller that must not commit before the request ends (a
    /// checksum to verify first) simply does not ask: [`ResumableWrite::checkpoint`] then
    /// reports it with the rest.
    fn take_durable(&mut self) -> Option<Checkpoint>;

    /// End of a request: make every byte appended durable and report the checkpoint,
    /// `None` when there is nothing new to record. `last`: these bytes end the object.
    fn checkpoint(&mut self, last: bool)
    -> impl Future<Output = Result<Option<Checkpoint>>> + Send;

    /// The caller recorded the last checkpoint: drop what it superseded (an old tail
    /// object). Best effort: a leftover goes with the upload's objects in the end.
    fn recorded(&mut self) -> impl Future<Output = ()> + Send;

    /// Drop what was appended since the last checkpoint (a verdict went against the body).
    /// What a later writer would drop anyway may be left (S3 parts no record names).
    fn discard(&mut self) -> impl Future<Output = Result<()>> + Send;
}

fn io_err(path: &FsPath) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A resumable write into a local file (see the module docs).
pub struct FileWrite {
    path: PathBuf,
    file: tokio::fs::File,
    /// The last durable offset (opened at, or last reported).
    durable: u64,
    written: u64,
    resumed: u64,
    writeback: Writeback,
}

impl FileWrite {
    /// Create the empty file of a new upload (replacing any file of that name).
    pub async fn create(path: &FsPath) -> Result<()> {
        tokio::fs::File::create(path).await.map_err(io_err(path))?;
        Ok(())
    }

    /// Continue the upload in `path` from the committed `offset`: bytes past it, left by a
    /// request that died before its commit, are dropped.
    pub async fn open(path: &FsPath, offset: u64) -> Result<Self> {
        let io = io_err(path);
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .await
            .map_err(&io)?;
        file.set_len(offset).await.map_err(&io)?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(&io)?;
        let writeback = Writeback::new(&file, offset).await;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            durable: offset,
            written: offset,
            resumed: offset,
            writeback,
        })
    }
}

impl ResumableWrite for FileWrite {
    fn resumed(&self) -> u64 {
        self.resumed
    }

    fn written(&self) -> u64 {
        self.written
    }

    async fn head(&mut self, window: usize) -> Result<Vec<u8>> {
        let mut head = Vec::new();
        if self.resumed < window as u64 {
            let io = io_err(&self.path);
            tokio::fs::File::open(&self.path)
                .await
                .map_err(&io)?
                .take(self.resumed)
                .read_to_end(&mut head)
                .await
                .map_err(&io)?;
        }
        Ok(head)
    }

    async fn append(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .await
            .map_err(io_err(&self.path))?;
        self.written += data.len() as u64;
        self.writeback.progress(self.written);
        Ok(())
    }

    fn take_durable(&mut self) -> Option<Checkpoint> {
        None
    }

    async fn checkpoint(&mut self, _last: bool) -> Result<Option<Checkpoint>> {
        let io = io_err(&self.path);
        self.file.flush().await.map_err(&io)?;
        self.file.sync_data().await.map_err(&io)?;
        if self.written == self.durable {
            return Ok(None);
        }
        self.durable = self.written;
        Ok(Some(Checkpoint::File {
            offset: self.written,
        }))
    }

    async fn recorded(&mut self) {}

    async fn discard(&mut self) -> Result<()> {
        let io = io_err(&self.path);
        self.file.set_len(self.durable).await.map_err(&io)?;
        self.file
            .seek(std::io::SeekFrom::Start(self.durable))
            .await
            .map_err(&io)?;
        self.written = self.durable;
        Ok(())
    }
}

/// Starts writeback of a request's bytes while the body still streams
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: a hint that does not wait for the disk), so
/// network receive and disk writes overlap instead of following each other at the final
/// `fsync`. Durability is unchanged: a checkpoint is reported only after `fsync`.
struct Writeback {
    file: Option<Arc<std::fs::File>>,
    started: u64,
    in_flight: Option<tokio::task::JoinHandle<()>>,
}

impl Writeback {
    async fn new(file: &tokio::fs::File, from: u64) -> Self {
        // A duplicate descriptor, owned by the hint tasks: never one closed under them.
        let file = match file.try_clone().await {
            Ok(f) => Some(Arc::new(f.into_std().await)),
            Err(_) => None,
        };
        Writeback {
            file,
            started: from,
            in_flight: None,
        }
    }

    /// `written` bytes are handed to the file: start writeback of what is past the last
    /// hint, once there is enough of it and the previous hint returned.
    fn progress(&mut self, written: u64) {
        let Some(file) = &self.file else { return };
        if written < self.started + WRITEBACK_EVERY
            || self.in_flight.as_ref().is_some_and(|h| !h.is_finished())
        {
            return;
        }
        let (file, from, len) = (file.clone(), self.started, written - self.started);
        self.started = written;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            // SAFETY: a plain syscall on a descriptor this Arc keeps open.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    from as libc::off64_t,
                    len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }));
    }
}

/// What the caller recorded of an unfinished multipart upload.
#[derive(Debug, Clone, Default)]
pub struct MultipartState {
    /// The multipart upload id ([`Storage::create_multipart`]).
    pub upload_id: String,
    /// Every recorded part, in index order.
    pub parts: Vec<Part>,
    /// The recorded tail object, if any.
    pub tail: Option<String>,
}

/// A resumable write into an S3 multipart upload (see the module docs).
pub struct MultipartWrite {
    storage: Storage,
    key: String,
    tenant: String,
    asset: String,
    upload_id: String,
    part_size: usize,
    /// Bytes not yet in a part: the committed tail, then this request's bytes.
    buf: BytesMut,
    /// Index of the next part, and the bytes in the parts before it.
    next_index: usize,
    parts_end: u64,
    parts_at_open: usize,
    resumed: u64,
    written: u64,
    /// The offset of the last checkpoint reported.
    durable: u64,
    /// Parts sent and not reported yet.
    pending: Vec<Part>,
    /// At the last checkpoint: the next part index, the bytes in parts, the tail's bytes
    /// (what `discard` goes back to).
    at_durable: (usize, u64, Bytes),
    /// The tail object the caller records (or will, once the last checkpoint is recorded),
    /// and one the last checkpoint superseded.
    tail: Option<String>,
    stale_tail: Option<String>,
}

impl Storage {
    /// The size of every part but the last of a resumable multipart write.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// Continue the multipart upload of asset `asset`'s source object from what the caller
    /// recorded (its tail is read back into memory: at most one part).
    pub async fn resume_multipart(
        &self,
        tenant: &str,
        asset: &str,
        state: MultipartState,
    ) -> Result<MultipartWrite> {
        let part_size = self.part_size;
        let mut buf = BytesMut::with_capacity(part_size);
        let tail_bytes = match &state.tail {
            Some(tail) => self.get_bytes(tail).await?,
            None => Bytes::new(),
        };
        buf.extend_from_slice(&tail_bytes);
        let parts_end: u64 = state.parts.iter().map(|p| p.size).sum();
        let resumed = parts_end + buf.len() as u64;
        Ok(MultipartWrite {
            storage: self.clone(),
            key: keys::source(tenant, asset),
            tenant: tenant.to_string(),
            asset: asset.to_string(),
            upload_id: state.upload_id,
            part_size,
            buf,
            next_index: state.parts.len(),
            parts_end,
            parts_at_open: state.parts.len(),
            resumed,
            written: resumed,
            durable: resumed,
            pending: Vec::new(),
            at_durable: (state.parts.len(), parts_end, tail_bytes),
            tail: state.tail,
            stale_tail: None,
        })
    }
}

impl MultipartWrite {
    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        let size = data.len() as u64;
        let etag = self
            .storage
            .put_part(&self.key, &self.upload_id, self.next_index, data)
            .await?;
        self.pending.push(Part {
            index: self.next_index,
            etag,
            size,
        });
        self.next_index += 1;
        self.parts_end += size;
        Ok(())
    }

    /// A new checkpoint at `offset` with the pending parts and `tail`; the tail it
    /// replaces goes once the caller recorded it.
    fn report(&mut self, tail: Option<String>, tail_bytes: Bytes, offset: u64) -> Checkpoint {
        if self.tail != tail {
            self.stale_tail = std::mem::replace(&mut self.tail, tail.clone());
        }
        self.durable = offset;
        self.at_durable = (self.next_index, self.parts_end, tail_bytes);
        Checkpoint::Multipart {
            parts: std::mem::take(&mut self.pending),
            tail,
            offset,
        }
    }
}

impl ResumableWrite for MultipartWrite {
    fn resumed(&self) -> u64 {
        self.resumed
    }

    fn written(&self) -> u64 {
        self.written
    }

    async fn head(&mut self, window: usize) -> Result<Vec<u8>> {
        Ok(if self.resumed < window as u64 && self.parts_at_open == 0 {
            self.buf.to_vec()
        } else {
            Vec::new()
        })
    }

    async fn append(&mut self, data: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        // Each full part goes out at once (S3 needs every part but the last to be at least
        // 5 MiB: all are exactly `part_size`).
        while self.buf.len() >= self.part_size {
            let part = self.buf.split_to(self.part_size).freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    fn take_durable(&mut self) -> Option<Checkpoint> {
        if self.pending.is_empty() {
            return None;
        }
        // Durable now: the bytes up to the last part's end; no tail past it yet.
        Some(self.report(None, Bytes::new(), self.parts_end))
    }

    async fn checkpoint(&mut self, last: bool) -> Result<Option<Checkpoint>> {
        let written = self.written;
        // Also when the bytes were all there before and `last` is only known now (a length
        // declared after them): the tail becomes the last part.
        if written == self.durable && (!last || self.buf.is_empty()) {
            return Ok(None);
        }
        let rest = self.buf.split().freeze();
        let (tail, tail_bytes) = if last {
            if !rest.is_empty() {
                self.send_part(rest).await?;
            }
            (None, Bytes::new())
        } else {
            // The rest becomes the new tail, under a new name.
            let key = keys::upload_tail(&self.tenant, &self.asset, written);
            self.storage.put(&key, rest.clone()).await?;
            (Some(key), rest)
        };
        Ok(Some(self.report(tail, tail_bytes, written)))
    }

    async fn recorded(&mut self) {
        if let Some(key) = self.stale_tail.take()
            && let Err(e) = self.storage.delete(&key).await
        {
            tracing::warn!(key, "could not delete an old upload tail: {e}");
        }
    }

    async fn discard(&mut self) -> Result<()> {
        // Back to the last checkpoint. Parts sent since stay unreferenced: they are sent
        // again under the same indexes, and a completion ignores parts it does not list.
        let (next_index, parts_end, tail) = self.at_durable.clone();
        self.pending.clear();
        (self.next_index, self.parts_end) = (next_index, parts_end);
        self.buf.clear();
        self.buf.extend_from_slice(&tail);
        self.written = self.durable;
        Ok(())
    }
}
