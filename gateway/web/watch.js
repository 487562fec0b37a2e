// The watch page's player: hls.js on the page's playlist, a quality menu (Auto and each
// level hls.js found), and storyboard previews over the seek bar. Everything it loads is
// named relative to the page, so the page works the same through a caching edge.
// `window.sluicePlayer` exposes the hls.js instance and what happened, for debugging.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const root = $('player');
  const video = $('video');
  const seek = $('seek');
  const quality = $('quality');
  const preview = $('preview');
  const previewImage = $('preview-image');
  const previewTime = $('preview-time');
  const state = { hls: null, levelSwitches: [], errors: [], storyboard: [] };
  window.sluicePlayer = state;

  function say(text) {
    const s = $('status');
    s.textContent = text || '';
    s.hidden = !text;
  }

  function clock(t) {
    if (!isFinite(t) || t < 0) t = 0;
    const h = Math.floor(t / 3600);
    const m = Math.floor((t % 3600) / 60);
    const s = String(Math.floor(t % 60)).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
  }

  // The seekable window: the whole video, or a live stream's DVR window.
  function range() {
    const r = video.seekable;
    if (r && r.length) return [r.start(0), r.end(r.length - 1)];
    return [0, isFinite(video.duration) ? video.duration : 0];
  }

  // ---- storyboard previews ----------------------------------------------------------------
  // The storyboard is a WebVTT track whose cues name a tile of a sprite sheet
  // (`storyboard.jpg#xywh=X,Y,W,H`, relative to the track's URL). The tiles are read once
  // and kept: hls.js clears the cues of every text track of the video when it attaches (and
  // again when it recovers from a media error), so they are read before that when the
  // track has already loaded, and at its `load` event otherwise.

  const trackEl = video.querySelector('track');
  if (trackEl) {
    trackEl.track.mode = 'hidden'; // loads the cues without rendering them
    const readTiles = () => {
      const tiles = Array.from(trackEl.track.cues || [], (cue) => tile(cue)).filter(Boolean);
      if (tiles.length) state.storyboard = tiles; // never replaced by cues hls.js cleared
    };
    trackEl.addEventListener('load', readTiles);
    // The track may have loaded before this script ran.
    if (trackEl.readyState === HTMLTrackElement.LOADED) readTiles();
  }

  function tile(cue) {
    const m = /^([^#\s]+)#xywh=(\d+),(\d+),(\d+),(\d+)$/.exec(cue.text.trim());
    if (!m) return null;
    return {
      start: cue.startTime,
      end: cue.endTime,
      url: new URL(m[1], trackEl.src).href,
      x: +m[2], y: +m[3], w: +m[4], h: +m[5],
    };
  }

  // ---- playback -------------------------------------------------------------------------

  const src = root.dataset.src;
  if (window.Hls && Hls.isSupported()) {
    const hls = new Hls({ enableWorker: true, backBufferLength: 30 });
    state.hls = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      fillQualityMenu(hls);
      video.play().catch(() => {}); // autoplay may be refused: the play button remains
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => {
      state.levelSwitches.push(d.level);
      showLevel(hls);
    });
    let mediaRecoveries = 0;
    hls.on(Hls.Events.ERROR, (_, d) => {
      state.errors.push(`${d.type}:${d.details}${d.fatal ? ':fatal' : ''}`);
      if (!d.fatal) return;
      if (d.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRecoveries++ < 3) {
        hls.recoverMediaError();
      } else if (d.type === Hls.ErrorTypes.NETWORK_ERROR) {
        say('The stream is not reachable; retrying…');
        setTimeout(() => hls.startLoad(), 2000);
      } else {
        say(`This video cannot be played (${d.details}).`);
        hls.destroy();
      }
    });
    hls.on(Hls.Events.FRAG_BUFFERED, () => say(''));
    hls.loadSource(src);
    hls.attachMedia(video);
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    // Safari and iOS play HLS themselves; hls.js is not needed there.
    video.src = src;
    quality.disabled = true;
  } else {
    say('This browser cannot play HLS video.');
  }

  // ---- quality menu ---------------------------------------------------------------------

  function levelLabel(level, all) {
    if (!level.height) return `${Math.round(level.bitrate / 1000)} kb/s`;
    const twins = all.filter((l) => l.height === level.height).length > 1;
    return twins ? `${level.height}p (${Math.round(level.bitrate / 1000)} kb/s)` : `${level.height}p`;
  }

  function fillQualityMenu(hls) {
    while (quality.options.length > 1) quality.remove(1);
    hls.levels
      .map((level, index) => ({ level, index }))
      .sort((a, b) => (b.level.height - a.level.height) || (b.level.bitrate - a.level.bitrate))
      .forEach(({ level, index }) => quality.add(new Option(levelLabel(level, hls.levels), String(index))));
    quality.value = '-1';
    quality.disabled = hls.levels.length < 2;
  }

  function showLevel(hls) {
    const auto = quality.options[0];
    const playing = hls.levels[hls.currentLevel];
    auto.textContent = hls.autoLevelEnabled && playing ? `Auto (${levelLabel(playing, hls.levels)})` : 'Auto';
  }

  quality.addEventListener('change', () => {
    const hls = state.hls;
    if (!hls) return;
    // A chosen level switches at once (the buffer ahead is replaced); Auto lets the
    // bandwidth estimate choose again from the next segment on.
    hls.currentLevel = Number(quality.value);
    showLevel(hls);
  });

  // ---- controls -------------------------------------------------------------------------

  const play = $('play');
  play.addEventListener('click', () => (video.paused ? video.play().catch(() => {}) : video.pause()));
  video.addEventListener('play', () => { play.innerHTML = '&#10074;&#10074;'; play.setAttribute('aria-label', 'Pause'); });
  video.addEventListener('pause', () => { play.innerHTML = '&#9654;'; play.setAttribute('aria-label', 'Play'); });
  video.addEventListener('click', () => play.click());

  const mute = $('mute');
  mute.addEventListener('click', () => { video.muted = !video.muted; });
  video.addEventListener('volumechange', () => { mute.textContent = video.muted ? 'Unmute' : 'Mute'; });

  $('fullscreen').addEventListener('click', () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else root.requestFullscreen().catch(() => {});
  });

  let dragging = false;
  seek.addEventListener('input', () => {
    dragging = true;
    const [start, end] = range();
    $('time').textContent = clock(start + (seek.value / 1000) * (end - start) - start);
  });
  seek.addEventListener('change', () => {
    const [start, end] = range();
    video.currentTime = start + (seek.value / 1000) * (end - start);
    dragging = false;
  });
  video.addEventListener('timeupdate', () => {
    const [start, end] = range();
    if (!dragging && end > start) seek.value = String(Math.round(((video.currentTime - start) / (end - start)) * 1000));
    $('time').textContent = clock(video.currentTime - start);
  });

  // ---- storyboard previews on the seek bar ----------------------------------------------

  function tileAt(t) {
    const tiles = state.storyboard;
    let lo = 0, hi = tiles.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (t < tiles[mid].start) hi = mid - 1;
      else if (t >= tiles[mid].end) lo = mid + 1;
      else return tiles[mid];
    }
    return tiles.length && t >= tiles[tiles.length - 1].start ? tiles[tiles.length - 1] : null;
  }

  seek.addEventListener('mousemove', (e) => {
    const rect = seek.getBoundingClientRect();
    const [start, end] = range();
    if (!rect.width || end <= start) return;
    const frac = Math.min(1, Math.max(0, (e.clientX - rect.left) / rect.width));
    const t = start + frac * (end - start);
    const tl = tileAt(t);
    previewImage.hidden = !tl;
    if (tl) {
      previewImage.style.width = `${tl.w}px`;
      previewImage.style.height = `${tl.h}px`;
      previewImage.style.backgroundImage = `url("${tl.url}")`;
      previewImage.style.backgroundPosition = `-${tl.x}px -${tl.y}px`;
    }
    previewTime.textContent = clock(t - start);
    preview.style.left = `${frac * rect.width}px`;
    preview.hidden = false;
  });
  seek.addEventListener('mouseleave', () => { preview.hidden = true; });
})();
