// The page of `sa2va serve`: upload media as a session, chat about it, draw the masks of each [SEG].
'use strict';

const PALETTE = ['#3b82f6', '#f97316', '#22c55e', '#e11d48', '#a855f7', '#eab308', '#14b8a6', '#ec4899', '#84cc16', '#6366f1'];
const VIDEO_EXTENSIONS = /\.(mp4|m4v|mov|webm|mkv|avi|mpe?g|ogv|3gp)$/i;
const PREFETCH_FRAMES = 4;
const MIN_REGION_SIZE = 3;  // image pixels; smaller drags are treated as clicks
const STORAGE_PREFIX = 'sa2va.';
// Decoded frames and mask overlays of a long video would not all fit in memory: each kind keeps
// the most recently used ones within half of this.
const CACHE_BUDGET_BYTES = 768 * 1024 * 1024;

const $ = (id) => document.getElementById(id);
const el = {
  modelName: $('model-name'), status: $('status'),
  error: $('error'), errorText: $('error-text'), errorClose: $('error-close'),
  dropZone: $('drop-zone'), mediaInput: $('media-input'),
  stage: $('stage'), canvas: $('media-canvas'),
  videoControls: $('video-controls'), play: $('play'), frameSlider: $('frame-slider'), frameLabel: $('frame-label'),
  tools: $('tools'), objects: $('objects'), objectsEmpty: $('objects-empty'), maskOpacity: $('mask-opacity'),
  downloadRle: $('download-rle'),
  drawRegion: $('draw-region'), clearRegions: $('clear-regions'), regionHint: $('region-hint'), regions: $('regions'),
  newChat: $('new-chat'), conversation: $('conversation'), conversationEmpty: $('conversation-empty'),
  chatForm: $('chat-form'), prompt: $('prompt'), send: $('send'), stop: $('stop'),
  maxTokens: $('max-tokens'), temperature: $('temperature'), apiKey: $('api-key'), forcedAnswer: $('forced-answer'),
};
const ctx = el.canvas.getContext('2d');

const state = {
  capabilities: null,   // from /v1/models; null = unknown, everything allowed
  media: null,          // {dataUrl, kind, name}: kept to start a new conversation on the same media
  session: null,        // {id, kind, width, height, frames, fps}
  epoch: 0,             // bumped whenever the session changes, so late async results are dropped
  frames: new Map(),    // t -> Promise<ImageBitmap> (the cache of /frames/{t})
  bitmaps: new Map(),   // t -> ImageBitmap, once loaded; in least recently used order
  overlays: new Set(),  // mask entries holding decoded pixels and an overlay; least recently used first
  frame: 0,
  playing: false,
  playTimer: 0,
  regions: [],          // visual prompts, {x, y, w, h} in image pixels
  regionsSent: false,   // visual prompts go with the first turn only
  turnsDone: 0,
  drawMode: false,
  drag: null,           // {x0, y0, x1, y1} while a region is being drawn
  results: [],          // one per assistant turn with masks
  shown: null,          // the result whose masks are drawn
  highlight: null,      // object index hovered in the text or the list
  opacity: 0.5,
  busy: false,
  abort: null,
  renderQueued: false,
};

// ---------- small helpers ----------

function storageGet(key, fallback) {
  try { const v = localStorage.getItem(STORAGE_PREFIX + key); return v === null ? fallback : v; } catch { return fallback; }
}
function storageSet(key, value) {
  try { if (value === '' || value === null) localStorage.removeItem(STORAGE_PREFIX + key); else localStorage.setItem(STORAGE_PREFIX + key, value); } catch { /* private mode */ }
}
function colorOf(index) { return PALETTE[index % PALETTE.length]; }
function hexToRgb(hex) { const n = parseInt(hex.slice(1), 16); return [(n >> 16) & 255, (n >> 8) & 255, n & 255]; }
function formatBytes(n) { return n < 1 << 20 ? `${(n / 1024).toFixed(0)} KB` : `${(n / (1 << 20)).toFixed(1)} MB`; }
function formatParameters(n) { return n >= 1e9 ? `${(n / 1e9).toFixed(1)}B` : n >= 1e6 ? `${(n / 1e6).toFixed(0)}M` : String(n); }
function setStatus(text) { el.status.textContent = text || ''; }
function make(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k === 'style') node.style.cssText = v;
    else if (k.startsWith('data-') || k.startsWith('aria-')) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of [].concat(children)) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function showError(message) {
  el.errorText.textContent = message;
  el.error.hidden = false;
}
function clearError() { el.error.hidden = true; el.errorText.textContent = ''; }
el.errorClose.addEventListener('click', clearError);

// ---------- API ----------

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function authHeaders(extra = {}) {
  const key = el.apiKey.value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorFromResponse(res) {
  let message = '';
  try {
    const text = await res.text();
    try { message = JSON.parse(text)?.error?.message || text; } catch { message = text; }
  } catch { /* body unreadable */ }
  message = (message || res.statusText || 'request failed').trim();
  if (res.status === 401 || res.status === 403) message += ' — set the API key under Options.';
  if (res.status === 413) message += ' — the file is too large for the server.';
  return new ApiError(`${message} (HTTP ${res.status})`, res.status);
}

// Relative URLs so that the page also works behind a proxy under a sub-path.
async function api(path, { method = 'GET', json, signal, keepalive } = {}) {
  const init = { method, headers: authHeaders(), signal, keepalive };
  if (json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(`Cannot reach the server (${e.message}).`, 0);
  }
  if (!res.ok) throw await errorFromResponse(res);
  return res;
}

async function loadModelInfo() {
  try {
    const info = await (await api('v1/models')).json();
    const model = info.data && info.data[0];
    if (!model) throw new ApiError('the server lists no model', 0);
    el.modelName.textContent = model.id;
    el.modelName.dataset.state = 'ok';
    const extra = model.sa2va || {};
    const details = [];
    if (extra.parameters) details.push(`${formatParameters(extra.parameters)} parameters`);
    if (extra.template) details.push(`template ${extra.template}`);
    if (extra.capabilities) details.push(extra.capabilities.join(', '));
    el.modelName.title = details.join(' · ');
    state.capabilities = extra.capabilities || null;
    applyCapabilities();
  } catch (e) {
    el.modelName.textContent = 'model unavailable';
    el.modelName.dataset.state = 'error';
    showError(`Loading the model list failed: ${e.message}`);
  }
}

function can(capability) { return !state.capabilities || state.capabilities.includes(capability); }

function applyCapabilities() {
  el.mediaInput.accept = can('video') ? 'image/*,video/*' : 'image/*';
  updateRegionControls();
}

// ---------- media and sessions ----------

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

function mediaKindOf(file) {
  if (file.type.startsWith('image/')) return 'image';
  if (file.type.startsWith('video/') || VIDEO_EXTENSIONS.test(file.name)) return 'video';
  return null;
}

async function loadFile(file) {
  clearError();
  const kind = mediaKindOf(file);
  if (!kind) { showError(`${file.name}: not an image or a video.`); return; }
  if (kind === 'video' && !can('video')) { showError('This model does not take videos.'); return; }
  let dataUrl;
  try { dataUrl = await readAsDataUrl(file); } catch (e) { showError(e.message); return; }
  state.media = { dataUrl, kind, name: file.name, size: file.size };
  await startSession();
}

function endSession() {
  stopChat();
  state.abort = null;
  state.busy = false;
  pause();
  if (state.session) {
    // Fire and forget: the server frees the session; nothing to wait for.
    api(`v1/sessions/${encodeURIComponent(state.session.id)}`, { method: 'DELETE', keepalive: true }).catch(() => {});
  }
  state.session = null;
  state.epoch++;
  for (const bitmap of state.bitmaps.values()) bitmap.close?.();
  state.frames.clear();
  state.bitmaps.clear();
  state.overlays.clear();
  state.frame = 0;
  state.regions = [];
  state.regionsSent = false;
  state.turnsDone = 0;
  state.results = [];
  state.shown = null;
  state.highlight = null;
  state.drag = null;
  setDrawMode(false);
  el.stage.hidden = true;
  el.tools.hidden = true;
  el.videoControls.hidden = true;
  el.dropZone.classList.remove('compact');
  el.conversation.replaceChildren(el.conversationEmpty);
  el.conversationEmpty.hidden = false;
  setBusy(false);
  renderObjects();
}

async function startSession() {
  const media = state.media;
  endSession();
  const epoch = state.epoch;
  setStatus(`Uploading ${media.name} (${formatBytes(media.size)})…`);
  el.dropZone.classList.add('busy');
  try {
    const res = await api('v1/sessions', { method: 'POST', json: { [media.kind]: media.dataUrl } });
    const session = await res.json();
    if (epoch !== state.epoch) {
      // Other media came meanwhile: this session is not wanted.
      api(`v1/sessions/${encodeURIComponent(session.id)}`, { method: 'DELETE' }).catch(() => {});
      return;
    }
    session.frames = Math.max(1, session.frames | 0);
    state.session = session;
    setStatus(session.kind === 'video'
      ? `${media.name}: ${session.width}×${session.height}, ${session.frames} frames at ${session.fps || '?'} fps`
      : `${media.name}: ${session.width}×${session.height}`);
    setupStage();
    await showFrame(0);
  } catch (e) {
    if (epoch !== state.epoch) return;
    setStatus('');
    showError(`Uploading ${media.name} failed: ${e.message}`);
  } finally {
    el.dropZone.classList.remove('busy');
    updateChatControls();
  }
}

function setupStage() {
  const s = state.session;
  el.canvas.width = s.width;
  el.canvas.height = s.height;
  el.stage.hidden = false;
  el.tools.hidden = false;
  el.dropZone.classList.add('compact');
  const isVideo = s.kind === 'video' && s.frames > 1;
  el.videoControls.hidden = !isVideo;
  el.frameSlider.max = String(s.frames - 1);
  el.frameSlider.value = '0';
  updateFrameLabel();
  updateRegionControls();
  el.prompt.focus();
}

function loadFrame(t) {
  if (!state.frames.has(t)) {
    const epoch = state.epoch;
    const id = state.session.id;
    const promise = api(`v1/sessions/${encodeURIComponent(id)}/frames/${t}`)
      .then((res) => res.blob())
      .then((blob) => createImageBitmap(blob))
      .then((bitmap) => {
        if (epoch !== state.epoch) { bitmap.close?.(); return null; }
        state.bitmaps.set(t, bitmap);
        trimFrameCache();
        if (t === state.frame) requestRender();
        return bitmap;
      })
      .catch((e) => {
        state.frames.delete(t);  // let a later attempt retry
        if (epoch === state.epoch) showError(`Loading frame ${t} failed: ${e.message}`);
        return null;
      });
    state.frames.set(t, promise);
  }
  return state.frames.get(t);
}

// How many frame-sized images fit in half of the cache budget.
function cacheLimit(minimum) {
  const s = state.session;
  const bytes = s ? s.width * s.height * 5 : 1;  // RGBA, plus the decoded 0/1 mask for overlays
  return Math.max(minimum, Math.floor(CACHE_BUDGET_BYTES / 2 / bytes));
}

function trimFrameCache() {
  const limit = cacheLimit(2 * PREFETCH_FRAMES + 2);
  for (const [t, bitmap] of state.bitmaps) {
    if (state.bitmaps.size <= limit) break;
    if (t === state.frame) continue;
    bitmap.close?.();
    state.bitmaps.delete(t);
    state.frames.delete(t);
  }
}

function touchFrame(t) {
  const bitmap = state.bitmaps.get(t);
  if (bitmap) { state.bitmaps.delete(t); state.bitmaps.set(t, bitmap); }
  return bitmap;
}

async function showFrame(t) {
  if (!state.session) return;
  state.frame = t;
  el.frameSlider.value = String(t);
  updateFrameLabel();
  updateObjectAreas();
  requestRender();
  for (let k = 1; k <= PREFETCH_FRAMES && t + k < state.session.frames; ++k) loadFrame(t + k);
  await loadFrame(t);
}

function updateFrameLabel() {
  const total = state.session ? state.session.frames : 0;
  el.frameLabel.textContent = `${state.frame + 1} / ${total}`;
}

function play() {
  if (!state.session || state.session.frames < 2) return;
  state.playing = true;
  el.play.textContent = '❚❚';
  el.play.setAttribute('aria-label', 'Pause');
  const step = async () => {
    if (!state.playing) return;
    const started = performance.now();
    await showFrame((state.frame + 1) % state.session.frames);
    if (!state.playing) return;
    const interval = 1000 / (state.session.fps > 0 ? state.session.fps : 10);
    state.playTimer = setTimeout(step, Math.max(0, interval - (performance.now() - started)));
  };
  step();
}
function pause() {
  state.playing = false;
  clearTimeout(state.playTimer);
  el.play.textContent = '▶';
  el.play.setAttribute('aria-label', 'Play');
}
el.play.addEventListener('click', () => (state.playing ? pause() : play()));
el.frameSlider.addEventListener('input', () => { pause(); showFrame(Number(el.frameSlider.value)); });

// Drop anywhere on the page; the drop zone only shows where.
el.mediaInput.addEventListener('change', () => {
  const file = el.mediaInput.files[0];
  el.mediaInput.value = '';  // so that picking the same file again reloads it
  if (file) loadFile(file);
});
document.addEventListener('dragover', (e) => {
  if (!e.dataTransfer.types.includes('Files')) return;
  e.preventDefault();
  document.body.classList.add('dragging');
});
document.addEventListener('dragleave', (e) => { if (!e.relatedTarget) document.body.classList.remove('dragging'); });
document.addEventListener('drop', (e) => {
  document.body.classList.remove('dragging');
  if (!e.dataTransfer.files.length) return;
  e.preventDefault();
  loadFile(e.dataTransfer.files[0]);
});
window.addEventListener('pagehide', () => {
  if (state.session) fetch(`v1/sessions/${encodeURIComponent(state.session.id)}`, { method: 'DELETE', headers: authHeaders(), keepalive: true }).catch(() => {});
});

// ---------- COCO RLE ----------

// Inverse of pycocotools' rleToString: 5-bit groups offset by 48, bit 0x20 = more groups follow,
// the last group's bit 0x10 is the sign; from the 4th count on, values are deltas to counts[i-2].
function rleFrString(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let value = 0, shift = 0, more = true, c = 0;
    while (more) {
      if (p >= text.length) throw new Error('COCO RLE string cut off');
      c = text.charCodeAt(p++) - 48;
      if (c < 0 || c > 63) throw new Error(`invalid COCO RLE character at ${p - 1}`);
      value |= (c & 0x1f) << shift;  // values stay far below 2^31
      more = (c & 0x20) !== 0;
      shift += 5;
    }
    if (c & 0x10) value -= 2 ** shift;  // sign-extend
    if (counts.length > 2) value += counts[counts.length - 2];
    counts.push(value);
  }
  return counts;
}

// Column-major runs starting with background -> row-major H×W of 0/1.
function decodeRle(rle) {
  const [h, w] = rle.size;
  const counts = Array.isArray(rle.counts) ? rle.counts : rleFrString(rle.counts);
  const mask = new Uint8Array(h * w);
  let position = 0;
  for (let i = 0; i < counts.length; ++i) {
    const end = position + counts[i];
    if (end > h * w) throw new Error(`COCO RLE covers more than ${h}×${w} pixels`);
    if (i % 2 === 1) for (let p = position; p < end; ++p) mask[(p % h) * w + ((p / h) | 0)] = 1;
    position = end;
  }
  if (position !== h * w) throw new Error(`COCO RLE covers ${position} of ${h}×${w} pixels`);
  return mask;
}

// ---------- results (masks of one assistant turn) ----------

function newResult(answer, turn) {
  const phrases = Array.isArray(answer.phrases) ? answer.phrases : [];
  const segCount = Math.max(phrases.length, (answer.content.match(/\[SEG\]/g) || []).length);
  return {
    content: answer.content,
    phrases,
    segCount,
    frames: new Map(),  // t -> Map(index -> {index, rle, bbox, area, pixels?, overlay?})
    hidden: new Set(),
    scores: null,
    done: false,
    turn,
  };
}

function maskPixels(entry) {
  if (!entry.pixels) entry.pixels = decodeRle(entry.rle);
  return entry.pixels;
}

// A canvas of the mask's size: colour inside, opaque colour on the outline.
function maskOverlay(entry) {
  state.overlays.delete(entry);
  state.overlays.add(entry);
  trimOverlayCache();
  if (entry.overlay && entry.overlayOpacity === state.opacity) return entry.overlay;
  const [h, w] = entry.rle.size;
  const pixels = maskPixels(entry);
  const [r, g, b] = hexToRgb(colorOf(entry.index));
  const fill = Math.round(state.opacity * 255);
  const image = new ImageData(w, h);
  const data = image.data;
  for (let y = 0; y < h; ++y) {
    for (let x = 0; x < w; ++x) {
      const i = y * w + x;
      if (!pixels[i]) continue;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
        !pixels[i - 1] || !pixels[i + 1] || !pixels[i - w] || !pixels[i + w];
      data[i * 4] = r; data[i * 4 + 1] = g; data[i * 4 + 2] = b;
      data[i * 4 + 3] = edge ? 255 : fill;
    }
  }
  const overlay = document.createElement('canvas');
  overlay.width = w;
  overlay.height = h;
  overlay.getContext('2d').putImageData(image, 0, 0);
  entry.overlay = overlay;
  entry.overlayOpacity = state.opacity;
  return overlay;
}

function trimOverlayCache() {
  const limit = cacheLimit(4 * Math.max(1, state.shown ? state.shown.segCount : 1));
  for (const entry of state.overlays) {
    if (state.overlays.size <= limit) break;
    entry.overlay = null;
    entry.pixels = null;
    state.overlays.delete(entry);
  }
}

function phraseOf(result, index) {
  return (result.phrases[index] || '').trim();
}

// ---------- drawing ----------

function requestRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => { state.renderQueued = false; render(); });
}

function render() {
  const s = state.session;
  if (!s) return;
  const W = el.canvas.width, H = el.canvas.height;
  const bitmap = touchFrame(state.frame);
  ctx.clearRect(0, 0, W, H);
  if (bitmap) ctx.drawImage(bitmap, 0, 0, W, H);
  else { ctx.fillStyle = '#1e1e24'; ctx.fillRect(0, 0, W, H); }
  el.canvas.dataset.frameLoaded = bitmap ? 'true' : 'false';

  let drawn = 0;
  const result = state.shown;
  const masks = result && result.frames.get(state.frame);
  if (bitmap && masks) {
    ctx.imageSmoothingEnabled = false;
    for (const entry of masks.values()) {
      if (result.hidden.has(entry.index)) continue;
      ctx.globalAlpha = state.highlight !== null && state.highlight !== entry.index ? 0.25 : 1;
      try {
        ctx.drawImage(maskOverlay(entry), 0, 0, W, H);
        drawn++;
      } catch (e) {
        showError(`Mask ${entry.index} on frame ${state.frame} cannot be decoded: ${e.message}`);
      }
    }
    ctx.globalAlpha = 1;
    ctx.imageSmoothingEnabled = true;
  }
  // Read by the browser test: how many masks the canvas shows now.
  el.canvas.dataset.masksDrawn = String(drawn);
  el.canvas.dataset.frame = String(state.frame);

  const lineWidth = Math.max(1.5, W / 400);
  ctx.lineWidth = lineWidth;
  ctx.font = `${Math.max(12, Math.round(W / 45))}px system-ui, sans-serif`;
  ctx.textBaseline = 'top';
  state.regions.forEach((r, i) => drawRegionBox(r, `region${i + 1}`, lineWidth));
  if (state.drag) drawRegionBox(normalizedDrag(), `region${state.regions.length + 1}`, lineWidth);
}

function drawRegionBox(r, label, lineWidth) {
  ctx.setLineDash([lineWidth * 4, lineWidth * 3]);
  ctx.strokeStyle = '#000';
  ctx.strokeRect(r.x, r.y, r.w, r.h);
  ctx.lineDashOffset = lineWidth * 4;
  ctx.strokeStyle = '#fff';
  ctx.strokeRect(r.x, r.y, r.w, r.h);
  ctx.setLineDash([]);
  ctx.lineDashOffset = 0;
  const padding = 3;
  const width = ctx.measureText(label).width + 2 * padding;
  const height = parseInt(ctx.font, 10) + 2 * padding;
  const y = r.y >= height ? r.y - height : r.y;
  ctx.fillStyle = 'rgba(0, 0, 0, 0.7)';
  ctx.fillRect(r.x, y, width, height);
  ctx.fillStyle = '#fff';
  ctx.fillText(label, r.x + padding, y + padding);
}

// ---------- regions (visual prompts) ----------

function setDrawMode(on) {
  state.drawMode = on;
  el.drawRegion.setAttribute('aria-pressed', String(on));
  el.drawRegion.classList.toggle('active', on);
  el.stage.classList.toggle('drawing', on);
}

function canDrawRegions() {
  return Boolean(state.session) && !state.regionsSent && state.turnsDone === 0 && !state.busy && can('visual_prompts');
}

function updateRegionControls() {
  const allowed = canDrawRegions();
  if (!allowed && state.drawMode) setDrawMode(false);
  el.drawRegion.disabled = !allowed;
  el.clearRegions.disabled = !allowed || state.regions.length === 0;
  if (!can('visual_prompts')) el.regionHint.textContent = 'This model does not take visual prompts.';
  else if (state.regionsSent || state.turnsDone > 0) el.regionHint.textContent = 'Regions go with the first message of a conversation; start a new conversation to draw others.';
  else el.regionHint.textContent = 'Visual prompts: drag boxes on the media, then refer to them as region1, region2, … in the first message.';
}

// Client coordinates -> image pixels, through the letterboxing of `object-fit: contain`.
function canvasPoint(e) {
  const rect = el.canvas.getBoundingClientRect();
  const scale = Math.min(rect.width / el.canvas.width, rect.height / el.canvas.height);
  const left = rect.left + (rect.width - el.canvas.width * scale) / 2;
  const top = rect.top + (rect.height - el.canvas.height * scale) / 2;
  const x = (e.clientX - left) / scale;
  const y = (e.clientY - top) / scale;
  return [Math.min(Math.max(x, 0), el.canvas.width), Math.min(Math.max(y, 0), el.canvas.height)];
}

function normalizedDrag() {
  const d = state.drag;
  const x = Math.round(Math.min(d.x0, d.x1)), y = Math.round(Math.min(d.y0, d.y1));
  return { x, y, w: Math.round(Math.max(d.x0, d.x1)) - x, h: Math.round(Math.max(d.y0, d.y1)) - y };
}

el.canvas.addEventListener('pointerdown', (e) => {
  if (!state.drawMode || e.button !== 0) return;
  e.preventDefault();
  el.canvas.setPointerCapture(e.pointerId);
  const [x, y] = canvasPoint(e);
  state.drag = { x0: x, y0: y, x1: x, y1: y };
  requestRender();
});
el.canvas.addEventListener('pointermove', (e) => {
  if (!state.drag) return;
  [state.drag.x1, state.drag.y1] = canvasPoint(e);
  requestRender();
});
function finishDrag(e) {
  if (!state.drag) return;
  if (e.type === 'pointerup') [state.drag.x1, state.drag.y1] = canvasPoint(e);
  const box = normalizedDrag();
  state.drag = null;
  if (e.type === 'pointerup' && box.w >= MIN_REGION_SIZE && box.h >= MIN_REGION_SIZE) {
    state.regions.push(box);
    renderRegions();
  }
  requestRender();
}
el.canvas.addEventListener('pointerup', finishDrag);
el.canvas.addEventListener('pointercancel', finishDrag);

el.drawRegion.addEventListener('click', () => setDrawMode(!state.drawMode));
el.clearRegions.addEventListener('click', () => { state.regions = []; renderRegions(); requestRender(); });

function renderRegions() {
  el.regions.replaceChildren(...state.regions.map((r, i) => {
    const name = `region${i + 1}`;
    const insert = make('button', { type: 'button', class: 'link-button', text: name, title: `Insert “${name}” into the message` });
    insert.addEventListener('click', () => insertIntoPrompt(name));
    const remove = make('button', { type: 'button', class: 'icon-button', text: '×', 'aria-label': `Remove ${name}`, disabled: !canDrawRegions() });
    remove.addEventListener('click', () => { state.regions.splice(i, 1); renderRegions(); requestRender(); });
    return make('li', {}, [insert, make('span', { class: 'region-box', text: ` [${r.x}, ${r.y}, ${r.w}, ${r.h}]` }), remove]);
  }));
  updateRegionControls();
}

function insertIntoPrompt(text) {
  const p = el.prompt;
  const start = p.selectionStart ?? p.value.length, end = p.selectionEnd ?? p.value.length;
  const before = p.value.slice(0, start);
  const spaced = (before && !/\s$/.test(before) ? ' ' : '') + text;
  p.setRangeText(spaced, start, end, 'end');
  p.focus();
}

// ---------- objects list and exports ----------

function renderObjects() {
  const result = state.shown;
  const items = [];
  if (result) {
    for (let k = 0; k < result.segCount; ++k) {
      const color = colorOf(k);
      const phrase = phraseOf(result, k);
      const toggle = make('input', { type: 'checkbox', class: 'object-toggle', checked: !result.hidden.has(k), 'data-index': String(k) });
      toggle.addEventListener('change', () => {
        if (toggle.checked) result.hidden.delete(k); else result.hidden.add(k);
        requestRender();
      });
      const png = make('button', { type: 'button', class: 'button small download-png', text: 'PNG', title: 'Download this mask of the current frame as a black/white PNG', 'data-index': String(k) });
      png.addEventListener('click', () => downloadMaskPng(result, k));
      const area = make('span', { class: 'object-area', 'data-index': String(k) });
      const item = make('li', { class: 'object', style: `--color: ${color}`, 'data-index': String(k), 'data-color': color }, [
        make('label', {}, [toggle, make('span', { class: 'swatch' }), make('span', { class: 'object-name', text: phrase || `[SEG] ${k + 1}` })]),
        area, png,
      ]);
      bindHighlight(item, result, k);
      items.push(item);
    }
  }
  el.objects.replaceChildren(...items);
  el.objectsEmpty.hidden = items.length > 0;
  el.downloadRle.disabled = !result || result.frames.size === 0;
  updateObjectAreas();
}

// The share of the current frame each object covers.
function updateObjectAreas() {
  const result = state.shown;
  if (!result || !state.session) return;
  const masks = result.frames.get(state.frame);
  const total = state.session.width * state.session.height;
  for (const node of el.objects.querySelectorAll('.object-area')) {
    const entry = masks && masks.get(Number(node.dataset.index));
    node.textContent = entry ? `${(100 * entry.area / total).toFixed(1)}%` : '–';
  }
  for (const button of el.objects.querySelectorAll('.download-png')) button.disabled = !(masks && masks.has(Number(button.dataset.index)));
}

function bindHighlight(node, result, index) {
  node.addEventListener('mouseenter', () => { if (state.shown === result) { state.highlight = index; requestRender(); } });
  node.addEventListener('mouseleave', () => { if (state.highlight === index) { state.highlight = null; requestRender(); } });
}

function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = make('a', { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}

function baseName() {
  return (state.media ? state.media.name.replace(/\.[^.]*$/, '') : 'sa2va').replace(/[^\w.-]+/g, '_');
}

el.downloadRle.addEventListener('click', () => {
  const result = state.shown;
  if (!result || !state.session) return;
  const masks = [];
  for (let k = 0; k < result.segCount; ++k) {
    const frames = [];
    for (const t of [...result.frames.keys()].sort((a, b) => a - b)) {
      const entry = result.frames.get(t).get(k);
      if (entry) frames.push({ frame: t, rle: entry.rle, bbox: entry.bbox, area: entry.area });
    }
    masks.push({ index: k, phrase: phraseOf(result, k), frames });
  }
  const json = { width: state.session.width, height: state.session.height, masks };
  download(new Blob([JSON.stringify(json, null, 1)], { type: 'application/json' }), `${baseName()}-masks.json`);
});

function downloadMaskPng(result, index) {
  const entry = result.frames.get(state.frame)?.get(index);
  if (!entry) return;
  const [h, w] = entry.rle.size;
  const pixels = maskPixels(entry);
  const canvas = document.createElement('canvas');
  canvas.width = w;
  canvas.height = h;
  const image = new ImageData(w, h);
  for (let i = 0; i < pixels.length; ++i) {
    const v = pixels[i] ? 255 : 0;
    image.data[i * 4] = v; image.data[i * 4 + 1] = v; image.data[i * 4 + 2] = v; image.data[i * 4 + 3] = 255;
  }
  canvas.getContext('2d').putImageData(image, 0, 0);
  canvas.toBlob((blob) => {
    if (blob) download(blob, `${baseName()}-mask${index}-frame${state.frame}.png`);
    else showError('Encoding the PNG failed.');
  }, 'image/png');
}

el.maskOpacity.addEventListener('input', () => {
  state.opacity = Number(el.maskOpacity.value);
  storageSet('opacity', el.maskOpacity.value);
  requestRender();
});

// ---------- conversation ----------

// "<p>phrase</p> [SEG]" -> phrase highlighted in the colour of the [SEG] after it; "[SEG]" -> a colour chip.
function renderAnswer(container, content, result) {
  const parts = [];
  const pattern = /<p>([\s\S]*?)<\/p>|\[SEG\]/g;
  let last = 0, match, segIndex = 0;
  while ((match = pattern.exec(content))) {
    if (match.index > last) parts.push({ kind: 'text', text: content.slice(last, match.index) });
    if (match[0] === '[SEG]') parts.push({ kind: 'seg', index: segIndex++ });
    else parts.push({ kind: 'phrase', text: match[1] });
    last = pattern.lastIndex;
  }
  if (last < content.length) parts.push({ kind: 'text', text: content.slice(last) });

  let nextSeg = null;  // walking backwards, the [SEG] that follows each phrase
  for (let i = parts.length - 1; i >= 0; --i) {
    if (parts[i].kind === 'seg') nextSeg = parts[i].index;
    else if (parts[i].kind === 'phrase') parts[i].index = nextSeg;
  }

  container.replaceChildren(...parts.map((part) => {
    if (part.kind === 'text') return document.createTextNode(part.text);
    const hasColor = part.index !== null && part.index !== undefined;
    const style = hasColor ? `--color: ${colorOf(part.index)}` : '';
    const node = part.kind === 'seg'
      ? make('span', { class: 'seg-chip', text: '[SEG]', style, title: `mask ${part.index + 1}${phraseOf(result, part.index) ? `: ${phraseOf(result, part.index)}` : ''}`, 'data-index': String(part.index) })
      : make('mark', { class: hasColor ? 'phrase' : 'phrase plain', text: part.text, style });
    if (hasColor && result) bindHighlight(node, result, part.index);
    return node;
  }));
}

function addTurn(role, text) {
  el.conversationEmpty.hidden = true;
  const body = make('div', { class: 'turn-text', text });
  const turn = make('div', { class: `turn ${role}` }, [make('div', { class: 'turn-role', text: role === 'user' ? 'You' : 'Sa2VA' }), body]);
  el.conversation.append(turn);
  el.conversation.scrollTop = el.conversation.scrollHeight;
  return turn;
}

function selectResult(result) {
  state.shown = result;
  state.highlight = null;
  for (const r of state.results) r.turn.classList.toggle('selected', r === result);
  renderObjects();
  requestRender();
}

function readOptions() {
  const body = {};
  const maxTokens = parseInt(el.maxTokens.value, 10);
  if (Number.isFinite(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
  const temperature = parseFloat(el.temperature.value);
  if (Number.isFinite(temperature) && temperature >= 0) body.temperature = temperature;
  const forced = el.forcedAnswer.value.trim();
  if (forced) body.answer = forced;
  return body;
}

function setBusy(busy) {
  state.busy = busy;
  document.body.dataset.busy = String(busy);
  updateChatControls();
  updateRegionControls();
  renderRegions();
}

function updateChatControls() {
  const ready = Boolean(state.session);
  el.prompt.disabled = !ready;
  el.prompt.placeholder = ready ? 'Ask about the media, e.g. “Please segment the person.” (Enter sends, Shift+Enter: new line)' : 'Load an image or video first';
  el.send.disabled = !ready || state.busy;
  el.send.hidden = state.busy;
  el.stop.hidden = !state.busy;
  el.newChat.disabled = !state.media || state.busy;
}

function stopChat() {
  if (state.abort) state.abort.abort();
}
el.stop.addEventListener('click', stopChat);

async function sendMessage() {
  const text = el.prompt.value.trim();
  if (!text || !state.session || state.busy) return;
  clearError();
  const session = state.session;
  const epoch = state.epoch;
  const body = { text, ...readOptions() };
  const regions = state.turnsDone === 0 && !state.regionsSent ? state.regions.slice() : [];
  if (regions.length) body.mask_prompts = regions.map((r) => ({ box: [r.x, r.y, r.w, r.h] }));

  const userTurn = addTurn('user', text);
  if (regions.length) userTurn.append(make('div', { class: 'turn-meta', text: `with ${regions.map((_, i) => `region${i + 1}`).join(', ')}` }));
  const turn = addTurn('assistant', '');
  turn.dataset.state = 'waiting';
  const textNode = turn.querySelector('.turn-text');
  textNode.append(make('span', { class: 'typing', text: 'thinking…' }));
  const meta = make('div', { class: 'turn-meta' });
  turn.append(meta);
  el.prompt.value = '';

  const abort = new AbortController();
  state.abort = abort;
  setBusy(true);
  let result = null;
  let streamed = '';
  let finished = false;
  const handle = (event) => {
    if (epoch !== state.epoch) return;
    switch (event.type) {
      case 'delta':  // optional incremental text, replaced by the answer event
        streamed += event.content || '';
        textNode.textContent = streamed;
        break;
      case 'answer': {
        turn.dataset.state = 'answered';
        result = newResult({ ...event, content: event.content ?? '' }, turn);
        renderAnswer(textNode, result.content, result);
        if (result.segCount > 0) {
          state.results.push(result);
          turn.classList.add('has-masks');
          turn.addEventListener('click', (e) => { if (!e.target.closest('.seg-chip, .phrase')) selectResult(result); });
          selectResult(result);
          meta.textContent = session.kind === 'video' ? `masks: 0 / ${session.frames} frames` : 'masks: computing…';
        }
        if (regions.length) state.regionsSent = true;
        break;
      }
      case 'frame': {
        if (!result) throw new Error('the server sent masks before the answer');
        const masks = new Map();
        for (const m of event.masks || []) masks.set(m.index, { index: m.index, rle: m.rle, bbox: m.bbox, area: m.area });
        result.frames.set(event.frame, masks);
        meta.textContent = session.kind === 'video' ? `masks: ${result.frames.size} / ${session.frames} frames` : '';
        if (state.shown === result) {
          if (result.frames.size === 1) renderObjects();
          if (event.frame === state.frame) { updateObjectAreas(); requestRender(); }
        }
        break;
      }
      case 'done':
        finished = true;
        if (result) {
          result.done = true;
          result.scores = event.scores || null;
          const parts = [];
          if (result.segCount) parts.push(`${result.segCount} mask${result.segCount > 1 ? 's' : ''}`);
          if (session.kind === 'video' && result.segCount) parts.push(`${result.frames.size} frames`);
          if (Array.isArray(result.scores) && result.scores.length) parts.push(`score ${result.scores.map((s) => Number(s).toFixed(2)).join(', ')}`);
          meta.textContent = parts.join(' · ');
          if (state.shown === result) renderObjects();
        }
        turn.dataset.state = 'done';
        break;
      case 'error':
        finished = true;
        throw new ApiError(event.error?.message || 'the server failed', 0);
      default:
        break;  // unknown events are ignored, for forward compatibility
    }
  };

  try {
    const res = await api(`v1/sessions/${encodeURIComponent(session.id)}/chat`, { method: 'POST', json: body, signal: abort.signal });
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line) handle(JSON.parse(line));
      }
    }
    buffer += decoder.decode();
    if (buffer.trim()) handle(JSON.parse(buffer));
    if (!finished) throw new ApiError('the answer stream ended early', 0);
    if (epoch === state.epoch) state.turnsDone++;
  } catch (e) {
    if (epoch !== state.epoch) return;
    const stopped = e.name === 'AbortError';
    turn.dataset.state = stopped ? 'stopped' : 'error';
    turn.classList.add('failed');
    if (!result) textNode.textContent = stopped ? '(stopped)' : '(no answer)';
    meta.textContent = stopped ? 'stopped' : 'failed';
    if (!stopped) {
      const expired = e.status === 404 ? ' The session is gone (server restarted?): load the media again or start a new conversation.' : '';
      showError(`The answer failed: ${e.message}${expired}`);
    }
  } finally {
    if (state.abort === abort) state.abort = null;
    if (epoch === state.epoch) {
      if (result && result.frames.size === 0 && state.results.includes(result)) {
        // No mask came: show the previous answer's masks again.
        state.results.splice(state.results.indexOf(result), 1);
        turn.classList.remove('has-masks', 'selected');
        if (state.shown === result) selectResult(state.results[state.results.length - 1] || null);
      }
      setBusy(false);
      el.prompt.focus();
    }
  }
}

el.chatForm.addEventListener('submit', (e) => { e.preventDefault(); sendMessage(); });
el.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendMessage(); }
});
el.newChat.addEventListener('click', () => { if (state.media) { clearError(); startSession(); } });

// ---------- options ----------

$('options-form').addEventListener('submit', (e) => e.preventDefault());  // settings apply on change

function bindStoredInput(input, key) {
  input.value = storageGet(key, input.value);
  input.addEventListener('change', () => storageSet(key, input.value.trim()));
}
bindStoredInput(el.maxTokens, 'maxTokens');
bindStoredInput(el.temperature, 'temperature');
bindStoredInput(el.apiKey, 'apiKey');
el.apiKey.addEventListener('change', () => { clearError(); loadModelInfo(); });
el.maskOpacity.value = storageGet('opacity', el.maskOpacity.value);
state.opacity = Number(el.maskOpacity.value);

updateChatControls();
loadModelInfo();
