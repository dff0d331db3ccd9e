// The job pages (app/api/routers/pages.py): every word about a job comes from the JSON API and
// is put on the page as text (textContent), never as markup.
//
// Test hooks: window.cosmosLog (player and page events, errors), window.cosmosPlayer (the
// player in use: {kind, format, url, player, video, ui}) and window.cosmosPage.load(format).
(() => {
  'use strict';

  const body = document.body;
  const base = body.dataset.base || '';
  const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);
  const STAGES = ['queued', 'probe', 'plan', 'route', 'split', 'encode', 'assemble', 'package',
    'publish', 'cleanup', 'done'];
  const NOT_INSTALLED = 'player libraries not installed: run make setup';

  const cosmosLog = [];
  window.cosmosLog = cosmosLog;
  window.cosmosPlayer = null;
  const note = (type, detail) => cosmosLog.push({t: performance.now(), type, detail: detail ?? null});
  document.addEventListener('securitypolicyviolation',
    (e) => note('csp', `${e.violatedDirective} ${e.blockedURI}`));

  // ------------------------------------------------------------------ API key
  // Given once as the address's fragment (#key=...), which no server sees, then kept in this
  // tab's session storage and sent as an Authorization header to this API only.
  const KEY = 'cosmos-api-key';
  const fromHash = /(?:^#|&)key=([^&]*)/.exec(location.hash);
  if (fromHash) {
    sessionStorage.setItem(KEY, decodeURIComponent(fromHash[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
  let apiKey = sessionStorage.getItem(KEY);
  const here = (url) => new URL(url, location.href).origin === location.origin;
  const auth = (url) => (apiKey && here(url) ? {Authorization: `Bearer ${apiKey}`} : {});

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function request(path, accept, method = 'GET') {
    const url = base + path;
    const response = await fetch(url, {method, headers: {Accept: accept, ...auth(url)}, cache: 'no-store'});
    if (response.ok) return response;
    let detail = response.statusText;
    try {
      const parsed = (await response.json()).detail;
      if (typeof parsed === 'string') detail = parsed;
    } catch (_) { /* not JSON */ }
    if (response.status === 401) askKey();
    throw new ApiError(response.status, `${response.status}: ${detail}`);
  }
  const api = async (path) => (await request(path, 'application/json')).json();

  function askKey() {
    const form = document.getElementById('auth');
    if (!form) return;
    form.hidden = false;
    document.getElementById('key-save').onclick = () => {
      apiKey = document.getElementById('key').value.trim() || null;
      if (apiKey) sessionStorage.setItem(KEY, apiKey);
      location.reload();
    };
  }

  // ------------------------------------------------------------------ small helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'class') node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(child ?? ''));
    }
    return node;
  }
  const $ = (id) => document.getElementById(id);
  const text = (id, value) => { const node = $(id); if (node) node.textContent = value ?? ''; };
  const when = (stamp) => (stamp ? new Date(stamp).toLocaleString() : '-');
  const kbps = (value) => (value ? `${Math.round(value)} kb/s` : '-');
  const safeLink = (url) => (/^https?:\/\//i.test(url || '') ? url : null);
  const basename = (uri) => decodeURIComponent(String(uri).split('/').pop() || '');
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function showError(err) {
    const node = $('error');
    if (!node) return;
    node.hidden = false;
    node.textContent = String(err && err.message ? err.message : err);
    note('page-error', node.textContent);
  }

  function rows(tableId, items, cells) {
    const tbody = $(tableId).tBodies[0];
    tbody.replaceChildren(...items.map((item) => el('tr', null, ...cells(item).map((c) => el('td', null, c)))));
  }

  // ------------------------------------------------------------------ /jobs
  async function jobsPage() {
    for (;;) {
      let list;
      try {
        list = await api('/v1/jobs?limit=200');
      } catch (err) {
        showError(err);
        return;
      }
      rows('jobs', list.jobs, (job) => [
        el('a', {href: `${base}/jobs/${encodeURIComponent(job.job_id)}`}, job.job_id),
        el('span', {class: `status ${job.status.toLowerCase()}`}, job.status),
        job.codec || '-', job.source || '-', when(job.created_at), when(job.closed_at),
      ]);
      $('jobs-empty').hidden = list.jobs.length > 0;
      note('jobs', list.jobs.length);
      if (!list.jobs.some((job) => !TERMINAL.has(job.status))) return;
      await sleep(5000);
    }
  }

  // ------------------------------------------------------------------ /jobs/{id}
  const jobId = body.dataset.job;
  const files = (name) => `${base}/jobs/${encodeURIComponent(jobId)}/files/${name.split('/').map(encodeURIComponent).join('/')}`;
  let outputs = null; // the job's manifest.json once it has succeeded
  let lastView = null;

  function renderSummary(view) {
    text('job-id', view.job_id);
    const status = $('status');
    status.textContent = view.status;
    status.className = `status ${view.status.toLowerCase()}`;
    text('stage', view.stage ? `stage: ${view.stage}` : '');
    $('progress').value = view.progress;
    text('progress-text', `${Math.round(view.progress * 100)}%`);
    const link = safeLink(view.web_ui_url);
    if (link) $('web-ui').href = link;
    const src = view.source;
    if (src) {
      const v = src.video;
      const audio = (src.audio_streams || []).map((a) => a.language || 'und').join(', ');
      text('source', `source: ${src.container}, ${src.duration_s.toFixed(2)} s, ${v.codec} ` +
        `${v.display_width}x${v.display_height} @ ${v.frame_rate}` + (audio ? `, audio ${audio}` : ''));
    }
    const error = $('job-error');
    error.hidden = !view.error;
    if (view.error) error.textContent = `${view.error.type}: ${view.error.message}`;
  }

  function renderTimeline(view) {
    const seconds = view.stage_seconds || {};
    const total = Object.values(seconds).reduce((a, b) => a + b, 0) || 1;
    const current = STAGES.indexOf(view.stage || 'queued');
    const items = STAGES.filter((s) => s !== 'queued' && s !== 'done' && s !== 'cleanup')
      .filter((s) => s in seconds || (s === view.stage && !TERMINAL.has(view.status)))
      .map((stage) => {
        const took = seconds[stage];
        const state = took !== undefined ? 'done' : STAGES.indexOf(stage) === current ? 'current' : 'pending';
        const bar = el('span', {class: 'bar'});
        bar.style.width = `${took !== undefined ? Math.max(2, (100 * took) / total) : 2}%`;
        return el('li', {class: state, 'data-stage': stage}, el('span', {class: 'name'}, stage), bar,
          el('span', {class: 'took'}, took !== undefined ? `${took.toFixed(2)} s` : 'running'));
      });
    $('timeline').replaceChildren(...items);
  }

  function quality(rendition) {
    const q = rendition && (rendition.quality || rendition.metrics);
    if (!q || typeof q !== 'object') return '-';
    return Object.entries(q).filter(([, v]) => typeof v === 'number')
      .map(([k, v]) => `${k} ${Number.isInteger(v) ? v : v.toFixed(2)}`).join(', ') || '-';
  }

  function renderRenditions(view) {
    const packaged = new Map(((outputs && outputs.renditions) || []).map((r) => [r.name, r]));
    const names = view.renditions.length ? view.renditions.map((r) => r.name) : [...packaged.keys()];
    const live = new Map(view.renditions.map((r) => [r.name, r]));
    rows('renditions', names, (name) => {
      const r = live.get(name) || {};
      const p = packaged.get(name) || {};
      const width = p.width || r.width;
      const height = p.height || r.height;
      const status = r.status === 'encoding' ? `encoding ${Math.round((r.progress || 0) * 100)}%` +
        (r.speed ? ` (${r.speed.toFixed(2)}x)` : '') : r.status || 'done';
      return [name, width ? `${width}x${height}` : '-',
        p.bitrate_kbps ? `${kbps(p.bitrate_kbps)} (peak ${kbps(p.peak_bitrate_kbps)})` : '-',
        [p.codec || r.codec, p.codecs].filter(Boolean).join(' '), p.encoder || r.encoder || '-',
        p.pool || r.queue || '-', quality(p), status];
    });
    const tracks = (outputs && outputs.audio_tracks) || [];
    const named = (t) => [t.name, t.title && `"${t.title}"`, t.default && '(default)'].filter(Boolean).join(' ');
    rows('audio', tracks, (t) => [named(t), t.language, t.codec,
      String(t.channels), kbps(t.bitrate_kbps),
      t.loudness ? `${t.loudness.output.integrated_lufs.toFixed(1)} LUFS` : '-']);
    const subs = (outputs && outputs.subtitles) || [];
    rows('subtitles', subs, (s) => [named(s), s.language,
      [s.forced && 'forced', s.hearing_impaired && 'SDH'].filter(Boolean).join(', ') || 'normal',
      String(s.cues)]);
    const notes = [
      ...(view.dropped || []).map((d) => `dropped ${d.name}: ${d.reason}`),
      ...(view.not_carried || []).map((n) => `not carried ${n.stream}: ${n.reason}`),
    ];
    $('notes').replaceChildren(...notes.map((n) => el('li', null, n)));
  }

  function render(view) {
    lastView = view;
    renderSummary(view);
    renderTimeline(view);
    renderRenditions(view);
  }

  function parseEvent(block) {
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    return data.length ? {event, data: data.join('\n')} : null;
  }

  // The job's event stream (server-sent events), read with fetch so that the key can go in a
  // header (EventSource sends none); reconnects, and the server sends the current view first.
  async function follow() {
    let delay = 1000;
    for (;;) {
      try {
        const response = await request(`/v1/jobs/${encodeURIComponent(jobId)}/events`, 'text/event-stream');
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, '\n');
          let cut;
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const parsed = parseEvent(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
            if (!parsed) continue;
            if (parsed.event === 'error') throw new ApiError(0, JSON.parse(parsed.data).detail);
            const view = JSON.parse(parsed.data);
            note('event', {status: view.status, stage: view.stage, progress: view.progress});
            render(view);
            if (parsed.event === 'end') return finished(view);
            delay = 1000;
          }
        }
      } catch (err) {
        if (err instanceof ApiError) {
          showError(err);
          return undefined;
        }
        note('stream-retry', String(err));
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 15000);
    }
  }

  async function finished(view) {
    if (view.status !== 'SUCCEEDED' || !view.manifests) {
      playerNote(`nothing to play: the job ${view.status.toLowerCase()}`);
      return;
    }
    try {
      // <img> (seek-bar thumbnails, the poster) sends no header: with a key, trade it for a
      // cookie that opens this API's /jobs/*/files/ only
      if (apiKey) await request('/jobs/files-session', 'application/json', 'POST');
      outputs = await (await request(`/jobs/${encodeURIComponent(jobId)}/files/manifest.json`, 'application/json')).json();
    } catch (err) {
      showError(err);
    }
    render(view);
    const formats = playable();
    for (const button of document.querySelectorAll('button[data-format]')) {
      button.disabled = !formats.includes(button.dataset.format);
      button.onclick = () => load(button.dataset.format).catch(() => {});
    }
    if (body.dataset.libraries !== 'ok') {
      playerNote(NOT_INSTALLED);
      return;
    }
    const first = formats.includes(body.dataset.startFormat) ? body.dataset.startFormat : formats[0];
    await load(first).catch(() => {});
  }

  // ------------------------------------------------------------------ the player
  const kind = body.dataset.player || 'shaka';
  const LIBS = {shaka: ['shaka-player.ui.js'], hlsjs: ['hls.min.js'], dashjs: ['dash.all.min.js']};
  const FORMATS = {shaka: ['hls', 'dash'], hlsjs: ['hls'], dashjs: ['dash']};
  const playable = () => FORMATS[kind] || [];
  let engine = null;

  function playerNote(message) {
    const node = $('player-note');
    node.hidden = !message;
    node.textContent = message || '';
  }

  const loaded = new Map();
  function script(name) {
    if (!loaded.has(name)) {
      loaded.set(name, new Promise((resolve, reject) => {
        const tag = el('script', {src: `${base}/web/lib/${name}`});
        tag.onload = resolve;
        tag.onerror = () => reject(new Error(NOT_INSTALLED));
        document.head.append(tag);
      }));
    }
    return loaded.get(name);
  }

  function watch(video) {
    for (const type of ['loadedmetadata', 'durationchange', 'playing', 'pause', 'seeked', 'waiting', 'ended', 'ratechange']) {
      video.addEventListener(type, () => note(type, {time: video.currentTime, duration: video.duration}));
    }
    video.addEventListener('error', () => note('error', `media error ${video.error && video.error.code}: ${video.error && video.error.message}`));
  }

  function shakaError(error) {
    return error ? `shaka ${error.code} (category ${error.category}, severity ${error.severity})` +
      (error.data && error.data.length ? `: ${JSON.stringify(error.data).slice(0, 300)}` : '') : 'shaka error';
  }

  const ENGINES = {
    async shaka(container) {
      const {shaka} = window;
      shaka.polyfill.installAll();
      if (!shaka.Player.isBrowserSupported()) throw new Error('this browser cannot play MSE streams');
      const video = el('video', {playsinline: ''});
      container.replaceChildren(video);
      watch(video);
      const player = new shaka.Player();
      await player.attach(video);
      const ui = new shaka.ui.Overlay(player, container, video);
      ui.configure({
        overflowMenuButtons: ['quality', 'language', 'captions', 'playback_rate', 'picture_in_picture', 'statistics'],
        castReceiverAppId: '',
        seekBarColors: {base: 'rgba(255,255,255,.3)', buffered: 'rgba(255,255,255,.54)', played: '#4fb3ff'},
      });
      player.getNetworkingEngine().registerRequestFilter((_type, req) => {
        Object.assign(req.headers, auth(req.uris[0]));
      });
      player.addEventListener('error', (e) => note('error', shakaError(e.detail)));
      for (const type of ['variantchanged', 'adaptation', 'trackschanged', 'textchanged']) {
        player.addEventListener(type, () => note(type));
      }
      return {
        player, video, ui,
        load: (url) => player.load(url).catch((err) => { note('error', shakaError(err)); throw new Error(shakaError(err)); }),
      };
    },
    async hlsjs(container) {
      const {Hls} = window;
      if (!Hls.isSupported()) throw new Error('this browser cannot play MSE streams');
      const video = el('video', {controls: '', playsinline: ''});
      container.replaceChildren(video);
      watch(video);
      const player = new Hls({xhrSetup: (xhr, url) => {
        for (const [k, v] of Object.entries(auth(url))) xhr.setRequestHeader(k, v);
      }});
      player.on(Hls.Events.ERROR, (_e, data) => note(data.fatal ? 'error' : 'warning', `hls.js ${data.type} ${data.details}`));
      player.attachMedia(video);
      return {
        player, video,
        load: (url) => new Promise((resolve, reject) => {
          player.once(Hls.Events.MANIFEST_PARSED, resolve);
          player.once(Hls.Events.ERROR, (_e, data) => data.fatal && reject(new Error(`hls.js ${data.details}`)));
          player.loadSource(url);
        }),
      };
    },
    async dashjs(container) {
      const {dashjs} = window;
      const video = el('video', {controls: '', playsinline: ''});
      container.replaceChildren(video);
      watch(video);
      const player = dashjs.MediaPlayer().create();
      player.addRequestInterceptor((req) => {
        req.headers = {...(req.headers || {}), ...auth(req.url)};
        return Promise.resolve(req);
      });
      player.on(dashjs.MediaPlayer.events.ERROR, (e) => note('error', `dash.js ${JSON.stringify(e.error).slice(0, 300)}`));
      player.initialize(video, null, false);
      return {
        player, video,
        load: (url) => new Promise((resolve, reject) => {
          const ok = () => { player.off(dashjs.MediaPlayer.events.ERROR, bad); resolve(); };
          const bad = (e) => { player.off(dashjs.MediaPlayer.events.STREAM_INITIALIZED, ok); reject(new Error(`dash.js ${JSON.stringify(e.error).slice(0, 300)}`)); };
          player.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, ok);
          player.on(dashjs.MediaPlayer.events.ERROR, bad);
          player.attachSource(url);
        }),
      };
    },
  };

  async function load(format) {
    if (!lastView || !lastView.manifests) throw new Error('the job has no outputs yet');
    if (!playable().includes(format)) throw new Error(`${kind} does not play ${format}`);
    const url = files(basename(format === 'hls' ? lastView.manifests.hls : lastView.manifests.dash));
    try {
      for (const name of LIBS[kind]) await script(name);
      if (!engine) engine = await ENGINES[kind]($('player'));
      if (outputs && typeof outputs.poster === 'string') engine.video.poster = files(outputs.poster);
      note('load', {format, url});
      await engine.load(url);
    } catch (err) {
      playerNote(String(err.message || err));
      throw err;
    }
    playerNote('');
    for (const button of document.querySelectorAll('button[data-format]')) {
      button.setAttribute('aria-pressed', String(button.dataset.format === format));
    }
    text('now-playing', `${format.toUpperCase()} with ${kind}`);
    window.cosmosPlayer = {kind, format, url, player: engine.player, video: engine.video, ui: engine.ui || null};
    note('loaded', {format, url});
    return url;
  }

  async function jobPage() {
    window.cosmosPage = {load, outputs: () => outputs};
    if (body.dataset.libraries !== 'ok') playerNote(NOT_INSTALLED);
    let view;
    try {
      view = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
    } catch (err) {
      showError(err);
      return;
    }
    render(view);
    if (TERMINAL.has(view.status)) await finished(view);
    else await follow();
  }

  const pages = {jobs: jobsPage, job: jobPage};
  const run = pages[body.dataset.page];
  if (run) {
    run().then(() => note('page-ready'), (err) => showError(err));
  }
})();
