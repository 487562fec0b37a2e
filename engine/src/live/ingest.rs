//! What an encoder pushes: playlists (parsed strictly, recorded, re-rendered for viewers
//! with our own sequence numbers) and segments (sniffed, stored, counted against the quota),
//! each checked against the stream's ingest token first.

use super::*;

impl Engine {
    /// The stream an ingest request names, if its token is right (404 otherwise: an
    /// ingest URL reveals nothing about other streams).
    pub(super) async fn ingest_stream(&self, id: &str, token: &str) -> Result<LiveRow> {
        let row = store::get_live(&self.inner.db, None, id)
            .await?
            .ok_or_else(|| Error::not_found("live stream", id))?;
        let expected: [u8; 32] = hex::decode(&row.ingest_hash)
            .ok()
            .and_then(|v| v.try_into().ok())
            .unwrap_or([0; 32]);
        if !constant_time_eq(&hash_key(token), &expected) {
            return Err(Error::not_found("live stream", id));
        }
        refuse_if_ended(&row)?;
        Ok(row)
    }

    pub(super) async fn record_reject(&self, id: &str, kind: &'static str, e: &Error) {
        let code = reject_code(e);
        metrics::counter!("sluice_live_requests_total", "kind" => kind, "result" => code)
            .increment(1);
        let now = self.now_ms();
        let json = serde_json::json!({
            "code": code, "message": e.to_string(), "at": rfc3339_ms(now)
        })
        .to_string();
        tracing::warn!(stream = id, code, "live ingest request refused: {e}");
        if let Err(err) = store::live_rejected(&self.inner.db, id, &json, now).await {
            tracing::warn!(stream = id, "cannot record a refused live request: {err}");
        }
    }

    /// Check an ingest URL (stream and token) before the gateway reads a request body:
    /// an unauthenticated client never makes the server buffer anything.
    pub async fn live_check_ingest(&self, id: &str, token: &str) -> Result<()> {
        self.ingest_stream(id, token).await.map(|_| ())
    }

    /// A request the gateway refused before the engine saw it (e.g. an oversized
    /// playlist body): recorded on the stream if the ingest URL is genuine.
    pub async fn live_refused(&self, id: &str, token: &str, kind: &'static str, e: Error) -> Error {
        if self.ingest_stream(id, token).await.is_ok() {
            self.record_reject(id, kind, &e).await;
        }
        e
    }

    /// PUT of a playlist under the ingest URL.
    pub async fn live_put_playlist(
        &self,
        id: &str,
        token: &str,
        name: &str,
        body: Bytes,
    ) -> Result<()> {
        let row = self.ingest_stream(id, token).await?;
        let res = self.live_playlist_inner(&row, name, body).await;
        match &res {
            Ok(()) => {
                metrics::counter!("sluice_live_requests_total", "kind" => "playlist", "result" => "ok")
                    .increment(1);
            }
            Err(e) if !e.is_retryable() => self.record_reject(id, "playlist", e).await,
            Err(_) => {}
        }
        res
    }

    pub(super) async fn live_playlist_inner(
        &self,
        row: &LiveRow,
        name: &str,
        body: Bytes,
    ) -> Result<()> {
        if ingest_kind(name)? != IngestKind::Playlist {
            return Err(Error::InvalidInput(format!("{name:?} is not a playlist")));
        }
        let max = self.inner.config.live.max_playlist_bytes;
        if body.len() as u64 > max {
            return Err(Error::TooLarge {
                size: body.len() as u64,
                max,
            });
        }
        let text = std::str::from_utf8(&body)
            .map_err(|_| Error::InvalidInput("the playlist is not UTF-8 text".into()))?;
        let parsed = hls::parse(text)
            .map_err(|e| Error::InvalidInput(format!("malformed playlist {name}: {e}")))?;
        let db = &self.inner.db;
        let lock = self.inner.live_locks.get(&row.id);
        let _guard = lock.lock().await;
        // Re-checked under the lock: a stream that began ending while this request
        // waited takes nothing more (its final playlists and recording are being made).
        self.still_open(&row.id).await?;
        match parsed {
            Playlist::Master(m) => {
                let primary = m
                    .variants
                    .iter()
                    .max_by_key(|v| v.bandwidth)
                    .map(|v| v.uri.as_str());
                let key = format!("{}{name}", keys::live_prefix(&row.tenant_id, &row.asset_id));
                // Never the pushed text: the regenerated master (no off-site entries).
                self.inner
                    .storage
                    .put(&key, Bytes::from(m.rendered.clone()))
                    .await?;
                store::live_set_master(db, &row.id, name, primary).await?;
            }
            Playlist::Media(m) => {
                self.record_media_playlist(row, name, &m).await?;
                store::live_default_primary(db, &row.id, name).await?;
                self.render_live_playlist(row, name, false).await?;
            }
        }
        store::live_ok(db, &row.id, body.len() as i64, 0, self.now_ms()).await?;
        drop(_guard);
        self.end_if_complete(&row.id).await?;
        Ok(())
    }

    /// Refuse when the stream is ending or ended (read now, not when the request began).
    pub(super) async fn still_open(&self, id: &str) -> Result<()> {
        let row = store::get_live(&self.inner.db, None, id)
            .await?
            .ok_or_else(|| Error::not_found("live stream", id))?;
        refuse_if_ended(&row)
    }

    /// Bind the new entries of a pushed media playlist to segment rows.
    pub(super) async fn record_media_playlist(
        &self,
        row: &LiveRow,
        name: &str,
        m: &hls::MediaPlaylist,
    ) -> Result<()> {
        let db = &self.inner.db;
        let mut state = store::live_playlists(db, &row.id)
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .unwrap_or(LivePlaylistRow {
                name: name.to_string(),
                target_duration: m.target_duration as i64,
                epoch: 0,
                first_msn: -1,
                last_msn: -1,
                next_pos: 0,
                ended: false,
            });
        let first = m.media_sequence as i64;
        // The media sequence went backwards: the encoder restarted (what follows is new, after
        // a discontinuity), unless this is a late copy of an earlier version of the playlist
        // that an encoder uploading in parallel let the newer one overtake.
        let mut restart = false;
        if state.first_msn >= 0 && first < state.first_msn {
            if self.is_late_copy(&row.id, &state, m).await? {
                tracing::debug!(stream = %row.id, playlist = name, "late copy of a playlist ignored");
                return Ok(());
            }
            restart = true;
        } else if self.restarted_in_place(&row.id, &state, m).await? {
            // A restart whose media sequence does not go backwards (an event playlist
            // starts at 0 again; a restart at the same number): the new run names, at a
            // number already recorded, another segment. Segments at one number never
            // change otherwise.
            restart = true;
        }
        if restart {
            state.epoch += 1;
            state.last_msn = -1;
        }
        let restart_run = restart;
        state.first_msn = first;
        state.target_duration = state.target_duration.max(m.target_duration as i64);
        for (i, seg) in m.segments.iter().enumerate() {
            let msn = first + i as i64;
            if msn <= state.last_msn {
                continue; // recorded by an earlier push of this playlist
            }
            let map_seq = match &seg.map {
                Some(uri) => Some(self.bind_init(&row.id, uri).await?),
                None => None,
            };
            let seq = match store::live_latest_by_name(db, &row.id, &seg.uri).await? {
                Some(r) if r.playlist.is_none() && !r.is_init => r.seq,
                _ => {
                    let seq = store::live_next_seq(db, &row.id).await?;
                    store::live_insert_segment(db, &row.id, seq, &seg.uri, ext_of(&seg.uri), None)
                        .await?;
                    seq
                }
            };
            let discontinuity = seg.discontinuity || std::mem::take(&mut restart);
            store::live_list_segment(
                db,
                &row.id,
                seq,
                name,
                state.next_pos,
                seg.duration,
                discontinuity,
                map_seq,
            )
            .await?;
            state.next_pos += 1;
            state.last_msn = msn;
        }
        // Sticky within a run: a late copy of an earlier version (without the tag) arriving
        // after the final playlist must not reopen it.
        state.ended = m.ended || (state.ended && !restart_run);
        store::live_save_playlist(db, &row.id, &state).await
    }

    /// Does `m`, which starts inside the recorded window, name at its first media
    /// sequence number another segment than the one recorded there? A different name, or
    /// the same name whose bytes were sent again with another size since (a retried PUT
    /// of the same segment has the same bytes and is not a restart).
    pub(super) async fn restarted_in_place(
        &self,
        stream: &str,
        state: &LivePlaylistRow,
        m: &hls::MediaPlaylist,
    ) -> Result<bool> {
        let first = m.media_sequence as i64;
        let Some(entry) = m.segments.first() else {
            return Ok(false);
        };
        if state.first_msn < 0 || first < state.first_msn || first > state.last_msn {
            return Ok(false);
        }
        let pos = position_of(state, first);
        let db = &self.inner.db;
        let Some(at) = store::live_segment_at(db, stream, &state.name, pos).await? else {
            return Ok(false);
        };
        if at.name != entry.uri {
            return Ok(true);
        }
        Ok(matches!(
            store::live_latest_by_name(db, stream, &entry.uri).await?,
            Some(r) if r.seq > at.seq && r.playlist.is_none() && !r.is_init && r.received
                && r.size != at.size
        ))
    }

    /// Is `m`, whose media sequence is below the recorded window, an older version of the
    /// playlist recorded in `state`? It is if it ends inside the window (a restarted encoder
    /// starts over with a short playlist far below it) and every entry it shares with the
    /// window names the segment, with the duration, recorded at that media sequence number.
    pub(super) async fn is_late_copy(
        &self,
        stream: &str,
        state: &LivePlaylistRow,
        m: &hls::MediaPlaylist,
    ) -> Result<bool> {
        let first = m.media_sequence as i64;
        let last = first + m.segments.len() as i64 - 1;
        if m.segments.is_empty() || last < state.first_msn || last > state.last_msn {
            return Ok(false);
        }
        let recorded = store::live_playlist_segments(&self.inner.db, stream, &state.name).await?;
        let by_pos: HashMap<i64, &store::LiveSegmentRow> = recorded
            .iter()
            .filter_map(|s| s.pos.map(|p| (p, s)))
            .collect();
        for msn in state.first_msn.max(first)..=last {
            let pos = position_of(state, msn);
            let entry = &m.segments[(msn - first) as usize];
            let same = by_pos.get(&pos).is_some_and(|r| {
                r.name == entry.uri
                    && r.duration
                        .is_some_and(|d| (d - entry.duration).abs() < 1e-6)
            });
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The row of an init segment a playlist maps (the newest with that name), created
    /// empty if its bytes have not come yet.
    pub(super) async fn bind_init(&self, stream: &str, uri: &str) -> Result<i64> {
        let db = &self.inner.db;
        let seq = match store::live_latest_by_name(db, stream, uri).await? {
            Some(r) => r.seq,
            None => {
                let seq = store::live_next_seq(db, stream).await?;
                store::live_insert_segment(db, stream, seq, uri, ext_of(uri), None).await?;
                seq
            }
        };
        store::live_mark_init(db, stream, seq).await?;
        Ok(seq)
    }

    /// Write the viewer playlist of one media playlist: the stored segments, in order, up
    /// to the first one whose bytes (or init segment) are missing, windowed to the DVR.
    pub(super) async fn render_live_playlist(
        &self,
        row: &LiveRow,
        name: &str,
        ended: bool,
    ) -> Result<()> {
        let db = &self.inner.db;
        let Some(state) = store::live_playlists(db, &row.id)
            .await?
            .into_iter()
            .find(|p| p.name == name)
        else {
            return Ok(());
        };
        let segs = store::live_playlist_segments(db, &row.id, name).await?;
        let inits: HashMap<i64, String> = store::live_received_inits(db, &row.id)
            .await?
            .into_iter()
            .collect();
        let ready = segs
            .iter()
            .take_while(|s| s.received && s.map_seq.is_none_or(|m| inits.contains_key(&m)))
            .count();
        let ready = &segs[..ready];
        // The DVR window, counted back from the live edge.
        let window = row.dvr_window_s as f64;
        let mut start = ready.len();
        let mut total = 0.0;
        while start > 0 {
            let d = ready[start - 1].duration.unwrap_or(0.0);
            if total + d > window && start < ready.len() {
                break;
            }
            total += d;
            start -= 1;
        }
        let shown = &ready[start..];
        let depth = name.matches('/').count();
        let up = "../".repeat(depth);
        let out: Vec<Segment> = shown
            .iter()
            .map(|s| Segment {
                uri: format!("{up}{}", segment_rel(s.seq, &s.ext)),
                duration: s.duration.unwrap_or(0.0),
                discontinuity: s.discontinuity,
                map: s.map_seq.and_then(|m| {
                    inits
                        .get(&m)
                        .map(|ext| format!("{up}{}", segment_rel(m, ext)))
                }),
            })
            .collect();
        // Discontinuities that left the window (and one on the first shown segment, whose
        // tag the writer drops) advance the discontinuity sequence.
        let disc_seq = ready[..start].iter().filter(|s| s.discontinuity).count() as u64
            + u64::from(shown.first().is_some_and(|s| s.discontinuity));
        let media_seq = shown.first().and_then(|s| s.pos).unwrap_or(state.next_pos) as u64;
        let head = MediaHead {
            target_duration: state.target_duration.max(1) as u64,
            media_sequence: media_seq,
            discontinuity_sequence: disc_seq,
            ended: ended || (state.ended && ready.len() == segs.len()),
            ..MediaHead::default()
        };
        let text = hls::write_media(&head, &out);
        let key = format!("{}{name}", keys::live_prefix(&row.tenant_id, &row.asset_id));
        self.inner.storage.put(&key, Bytes::from(text)).await?;
        Ok(())
    }

    /// PUT of a segment under the ingest URL. The body is streamed to a scratch file (at
    /// most `live.max_segment_bytes`), checked, and only then becomes visible.
    pub async fn live_put_segment<S, E>(
        &self,
        id: &str,
        token: &str,
        name: &str,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let row = self.ingest_stream(id, token).await?;
        let res = self.live_segment_inner(&row, name, body).await;
        match &res {
            Ok(size) => {
                metrics::counter!("sluice_live_requests_total", "kind" => "segment", "result" => "ok")
                    .increment(1);
                metrics::counter!("sluice_live_bytes_total").increment(*size);
            }
            Err(e) if !e.is_retryable() => self.record_reject(id, "segment", e).await,
            Err(_) => {}
        }
        res.map(|_| ())
    }

    pub(super) async fn live_segment_inner<S, E>(
        &self,
        row: &LiveRow,
        name: &str,
        mut body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if ingest_kind(name)? != IngestKind::Segment {
            return Err(Error::InvalidInput(format!("{name:?} is not a segment")));
        }
        let max = self.inner.config.live.max_segment_bytes;
        let dir = self.inner.work_dir.join("live");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(format!("{}-{}", row.id, ulid::Ulid::new()));
        let result = async {
            let io = |e| Error::io(&path, e);
            let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
            let mut size = 0u64;
            let mut head: Vec<u8> = Vec::with_capacity(200);
            let mut sniffed = false;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > max {
                    return Err(Error::TooLarge { size, max });
                }
                if !sniffed {
                    let take = (189 - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..take]);
                    if head.len() >= 189 {
                        sniff_segment(&head)?;
                        sniffed = true;
                    }
                }
                file.write_all(&chunk).await.map_err(io)?;
            }
            if !sniffed {
                if head.is_empty() {
                    return Err(Error::InvalidInput("the segment is empty".into()));
                }
                sniff_segment(&head)?;
            }
            file.flush().await.map_err(io)?;
            Ok(size)
        }
        .await;
        let size = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(e);
            }
        };
        let stored = self.store_segment(row, name, &path, size).await;
        let _ = tokio::fs::remove_file(&path).await;
        stored?;
        Ok(size)
    }

    pub(super) async fn store_segment(
        &self,
        row: &LiveRow,
        name: &str,
        path: &std::path::Path,
        size: u64,
    ) -> Result<()> {
        let db = &self.inner.db;
        let lock = self.inner.live_locks.get(&row.id);
        let _guard = lock.lock().await;
        // Re-checked under the lock: a stream that began ending while this request
        // waited takes nothing more (its final playlists and recording are being made).
        self.still_open(&row.id).await?;
        let now = self.now_ms();
        // Which row do these bytes belong to? One listed and waiting for them; the same
        // unlisted name sent again (a retry: not visible yet, so replaceable); otherwise a
        // new row — a listed, stored name is never overwritten.
        let existing = store::live_latest_by_name(db, &row.id, name).await?;
        let (seq, listed, is_init, fresh) = match &existing {
            Some(r) if !r.received || r.playlist.is_none() && !r.is_init => {
                (r.seq, r.playlist.clone(), r.is_init, false)
            }
            _ => (store::live_next_seq(db, &row.id).await?, None, false, true),
        };
        // Charged to the tenant's storage quota as it arrives (the recording's final size
        // replaces the running total when the stream ends); a retried, replaceable segment
        // is charged again only for what it adds.
        let before = existing
            .as_ref()
            .filter(|r| !fresh && r.received)
            .and_then(|r| r.size)
            .unwrap_or(0);
        store::charge_live_bytes(
            db,
            &row.tenant_id,
            &row.asset_id,
            (size as i64).saturating_sub(before),
        )
        .await?;
        let ext = ext_of(name);
        let key = format!(
            "{}{}",
            keys::live_prefix(&row.tenant_id, &row.asset_id),
            segment_rel(seq, ext)
        );
        self.inner.storage.put_file_move(&key, path).await?;
        if fresh {
            store::live_insert_segment(db, &row.id, seq, name, ext, Some((size as i64, now)))
                .await?;
        } else {
            store::live_segment_received(db, &row.id, seq, size as i64, now).await?;
        }
        store::live_ok(db, &row.id, size as i64, 1, now).await?;
        if is_init {
            for p in store::live_playlists(db, &row.id).await? {
                self.render_live_playlist(row, &p.name, false).await?;
            }
        } else if let Some(p) = listed {
            self.render_live_playlist(row, &p, false).await?;
        }
        drop(_guard);
        self.end_if_complete(&row.id).await
    }

    /// DELETE under the ingest URL (`-hls_flags delete_segments`): acknowledged, but the
    /// bytes stay for the DVR window and the recording.
    pub async fn live_delete(&self, id: &str, token: &str, name: &str) -> Result<()> {
        self.ingest_stream(id, token).await?;
        ingest_kind(name)?;
        store::live_ok(&self.inner.db, id, 0, 0, self.now_ms()).await?;
        metrics::counter!("sluice_live_requests_total", "kind" => "delete", "result" => "ok")
            .increment(1);
        Ok(())
    }
}
