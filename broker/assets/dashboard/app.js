// The tickwire dashboard: broker health and rates (/readyz, /v1/stats),
// the busiest topics, a ticker table and a live tail, both fed by the JS
// client (tickwire-client.js, the bundle of client-sdk/js).
//
// Rendering: messages only update plain data structures; one
// requestAnimationFrame callback per frame writes the DOM, so thousands of
// messages per second cost one DOM pass per frame, not one per message.
//
// Credentials: a token from the URL fragment (#token=…, never sent to the
// server) or the token field; it goes to the WebSocket as ?token= (by the
// client) and to fetch as Authorization: Bearer.

import { Client } from './tickwire-client.js';

const TAIL_ROWS = 200;
const TICKER_ROWS = 500;
const SPARK_POINTS = 60;
const STATS_EVERY_MS = 1000;
/** Messages the test hook keeps (window.tickwireDashboard.tail). */
const HOOK_KEEP = 10000;

const $ = (id) => document.getElementById(id);

const fragment = new URLSearchParams(location.hash.slice(1));
let token = fragment.get('token') || '';
const transports = fragment.get('transports')?.split(',').filter(Boolean);

// ---- formatting -----------------------------------------------------------

const numberFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
const priceFormat = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 4 });
const percentFormat = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });

function formatRate(n) {
  if (!Number.isFinite(n)) return '–';
  if (n >= 1e6) return `${numberFormat.format(n / 1e6)}M`;
  if (n >= 1e4) return `${numberFormat.format(n / 1e3)}k`;
  return numberFormat.format(n);
}

function formatBytes(n) {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${numberFormat.format(n)} ${units[i]}`;
}

function formatUptime(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `up ${d}d ${h}h`;
  if (h) return `up ${h}h ${m}m`;
  return `up ${m}m ${s % 60}s`;
}

function formatTime(micros) {
  const date = new Date(micros / 1000);
  return date.toLocaleTimeString('en-GB', { hour12: false }) + '.' + String(date.getMilliseconds()).padStart(3, '0');
}

/** A short text for any payload. */
function preview(data) {
  if (data instanceof Uint8Array) return `<${data.length} bytes>`;
  let text;
  try {
    text = typeof data === 'string' ? JSON.stringify(data) : JSON.stringify(data, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
  } catch {
    text = String(data);
  }
  return text === undefined ? String(data) : text.length > 160 ? `${text.slice(0, 157)}…` : text;
}

/** The number a ticker shows: the payload if numeric, else its price-like field. */
function numericValue(data) {
  if (typeof data === 'number') return data;
  if (typeof data === 'bigint') return Number(data);
  if (data && typeof data === 'object' && !(data instanceof Uint8Array)) {
    for (const key of ['px', 'price', 'last', 'value', 'v']) {
      if (typeof data[key] === 'number') return data[key];
    }
    for (const value of Object.values(data)) {
      if (typeof value === 'number') return value;
    }
  }
  return null;
}

// ---- frame scheduling -----------------------------------------------------

const dirty = new Set();
let frameRequested = false;

/** Marks `part` for the next frame's render. */
function invalidate(part) {
  dirty.add(part);
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(renderFrame);
  }
}

function renderFrame() {
  frameRequested = false;
  hook.renders += 1;
  const parts = [...dirty];
  dirty.clear();
  for (const part of parts) part();
}

// ---- the client -----------------------------------------------------------

const wsUrl = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;
let client = null;

const hook = {
  /** Every tail message (topic, epoch, seq), oldest first, bounded. */
  tail: [],
  /** Latest ticker values by topic. */
  ticker: new Map(),
  /** Connection state changes, for tests. */
  states: [],
  /** Animation frames that wrote the DOM. */
  renders: 0,
  /** Whether the ticker's and the tail's current subscriptions were acknowledged. */
  subscribed: { ticker: false, tail: false },
  get client() { return client; },
  get transport() { return client?.transport ?? null; },
};
window.tickwireDashboard = hook;

function showNotice(element, text) {
  element.textContent = text || '';
  element.hidden = !text;
}

function connect() {
  client?.close();
  const options = { token: token || undefined };
  if (transports?.length) options.transports = transports;
  client = new Client(wsUrl, options);
  client.on('state', (state, info) => {
    hook.states.push({ state, transport: info?.transport ?? null });
    const badge = $('conn');
    badge.dataset.state = state;
    badge.textContent = state === 'connected' ? `connected · ${info?.transport ?? client.transport}` : state;
    badge.title = info?.error ? `${info.error.code}: ${info.error.message}` : '';
    document.dispatchEvent(new CustomEvent('tickwire:state', { detail: { state, transport: info?.transport ?? null } }));
  });
  client.on('error', (error) => console.warn('tickwire:', error.code, error.message));
  ticker.subscribe();
  tail.subscribe();
}

/** Subscribes `pattern` with `options` for `part` (ticker, tail), reporting refusals in `notice`. */
function subscribeTo(part, pattern, options, notice, onMessage) {
  showNotice(notice, '');
  hook.subscribed[part] = false;
  let sub;
  try {
    sub = client.subscribe(pattern, options);
  } catch (error) {
    showNotice(notice, `${error.code ?? 'error'}: ${error.message}`);
    return null;
  }
  sub.on('message', onMessage);
  sub.ready.then(
    () => { if (sub === (part === 'tail' ? tail.sub : ticker.sub)) hook.subscribed[part] = true; },
    (error) => showNotice(notice, `${pattern}: ${error.code ?? 'error'}: ${error.message}`),
  );
  return sub;
}

// ---- ticker ---------------------------------------------------------------

const ticker = {
  sub: null,
  rows: new Map(), // topic -> { tr, cells, value, previous, seq, time, changed, flip }
  pending: new Map(), // topic -> latest message since the last frame

  subscribe() {
    this.sub?.unsubscribe();
    this.rows.clear();
    this.pending.clear();
    hook.ticker.clear();
    $('ticker-body').replaceChildren();
    $('ticker-empty').hidden = false;
    const pattern = $('ticker-pattern').value.trim() || 'stocks.*';
    const maxRate = Number($('ticker-rate').value) || undefined;
    this.sub = subscribeTo('ticker', pattern, { maxRate, last: true }, $('ticker-error'), (m) => {
      this.pending.set(m.topic, m);
      hook.ticker.set(m.topic, { seq: m.seq, data: m.data });
      invalidate(renderTicker);
    });
  },
};

function tickerRow(topic) {
  const tr = document.createElement('tr');
  const cells = ['topic', 'val num', 'change num', 'seq num', 'time num'].map((cls) => {
    const td = document.createElement('td');
    td.className = cls;
    tr.append(td);
    return td;
  });
  cells[0].textContent = topic;
  tr.dataset.topic = topic;
  return { tr, cells, value: null, flip: false };
}

function renderTicker() {
  const body = $('ticker-body');
  let added = false;
  for (const [topic, m] of ticker.pending) {
    let row = ticker.rows.get(topic);
    if (!row) {
      if (ticker.rows.size >= TICKER_ROWS) continue;
      row = tickerRow(topic);
      ticker.rows.set(topic, row);
      added = true;
    }
    const value = numericValue(m.data);
    const [, valueCell, changeCell, seqCell, timeCell] = row.cells;
    if (value !== null) {
      valueCell.textContent = priceFormat.format(value);
      if (row.value !== null && value !== row.value) {
        const delta = value - row.value;
        const pct = row.value !== 0 ? (delta / Math.abs(row.value)) * 100 : 0;
        changeCell.textContent = `${delta > 0 ? '▲' : '▼'} ${priceFormat.format(Math.abs(delta))} (${percentFormat.format(Math.abs(pct))}%)`;
        row.tr.dataset.dir = delta > 0 ? 'up' : 'down';
      }
      row.value = value;
    } else {
      valueCell.textContent = preview(m.data);
    }
    seqCell.textContent = String(m.seq);
    timeCell.textContent = formatTime(m.time);
    // Two animation names so each change restarts the flash without a reflow.
    row.flip = !row.flip;
    row.tr.dataset.flash = row.flip ? 'a' : 'b';
  }
  ticker.pending.clear();
  if (added) {
    const sorted = [...ticker.rows.keys()].sort();
    body.replaceChildren(...sorted.map((topic) => ticker.rows.get(topic).tr));
    $('ticker-empty').hidden = ticker.rows.size > 0;
  }
}

// ---- live tail ------------------------------------------------------------

const tail = {
  sub: null,
  paused: false,
  count: 0,
  pending: [], // newest last, at most TAIL_ROWS

  subscribe() {
    this.sub?.unsubscribe();
    this.pending = [];
    this.count = 0;
    hook.tail.length = 0;
    $('tail-body').replaceChildren();
    const pattern = $('tail-pattern').value.trim();
    if (!pattern) return;
    this.sub = subscribeTo('tail', pattern, {}, $('tail-error'), (m) => {
      this.count += 1;
      hook.tail.push({ topic: m.topic, epoch: m.epoch, seq: m.seq });
      if (hook.tail.length > HOOK_KEEP) hook.tail.splice(0, hook.tail.length - HOOK_KEEP);
      if (this.paused) return;
      this.pending.push(m);
      if (this.pending.length > TAIL_ROWS) this.pending.splice(0, this.pending.length - TAIL_ROWS);
      invalidate(renderTail);
    });
  },
};

function renderTail() {
  const body = $('tail-body');
  const rows = tail.pending.map((m) => {
    const tr = document.createElement('tr');
    for (const [text, cls] of [[formatTime(m.time), 'time'], [m.topic, 'topic'], [String(m.seq), 'num'], [preview(m.data), 'data']]) {
      const td = document.createElement('td');
      td.className = cls;
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  tail.pending = [];
  body.prepend(...rows.reverse());
  while (body.childElementCount > TAIL_ROWS) body.lastElementChild.remove();
  $('tail-count').textContent = `${tail.count.toLocaleString('en-US')} messages`;
  body.dataset.lastSeq = String(hook.tail.at(-1)?.seq ?? '');
}

// ---- stats, health and busiest topics ------------------------------------

const history = { publishes: [], deliveries: [] };
let previousStats = null;

function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function spark(id, values) {
  const line = $(id).querySelector('polyline');
  const max = Math.max(1, ...values);
  const step = 120 / Math.max(1, values.length - 1);
  line.setAttribute('points', values.map((v, i) => `${(i * step).toFixed(1)},${(29 - (v / max) * 27).toFixed(1)}`).join(' '));
}

function renderStats(stats) {
  const counters = stats.counters;
  if (previousStats) {
    const dt = Math.max(stats.uptime_seconds - previousStats.uptime_seconds, 0.001);
    const rate = (key) => Math.max(0, (counters[key] - previousStats.counters[key]) / dt);
    const pubs = rate('publishes'), dels = rate('deliveries');
    for (const [key, value] of [['publishes', pubs], ['deliveries', dels]]) {
      history[key].push(value);
      if (history[key].length > SPARK_POINTS) history[key].shift();
      $(`rate-${key}`).textContent = formatRate(value);
      spark(`spark-${key}`, history[key]);
    }
    $('rate-bytes').textContent = `${formatBytes(rate('bytes_out'))}/s`;
  }
  previousStats = stats;
  $('total-bytes').textContent = `${formatBytes(counters.bytes_out)} sent · ${formatBytes(counters.bytes_in)} received`;
  const conns = stats.connections;
  $('connections').textContent = formatRate(conns.tcp);
  const kinds = ['websocket', 'sse', 'poll'].filter((k) => k in conns);
  $('connections-detail').textContent = kinds.map((k) => `${k} ${conns[k]}`).join(' · ');
  $('subs-topics').textContent = `${formatRate(stats.subscriptions)} · ${formatRate(stats.topics)}`;
  $('uptime').textContent = formatUptime(stats.uptime_seconds);
  $('dropped').textContent = `${formatRate(counters.dropped)} · ${formatRate(counters.slow_consumer_closes)}`;
  $('backplane').textContent = stats.backplane ? `cluster backplane ${stats.backplane.up ? 'up' : 'DOWN'}` : 'single node';
  $('version').textContent = `v${stats.version}`;
  renderBusiest(stats.busiest);
  document.body.dataset.statsSeen = String(Number(document.body.dataset.statsSeen || 0) + 1);
}

function renderBusiest(busiest) {
  const list = $('busiest');
  const items = busiest ?? [];
  $('busiest-empty').hidden = items.length > 0;
  $('busiest-empty').textContent = busiest === null ? 'sampling…' : 'no traffic yet';
  const top = Math.max(1, ...items.map((b) => b.rate));
  list.replaceChildren(...items.map((b) => {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'topic';
    name.textContent = b.topic;
    const rate = document.createElement('span');
    rate.className = 'num';
    rate.textContent = formatRate(b.rate);
    const bar = document.createElement('span');
    bar.className = 'bar';
    bar.style.width = `${((b.rate / top) * 100).toFixed(1)}%`;
    li.append(bar, name, rate);
    return li;
  }));
}

async function pollStats() {
  try {
    const response = await fetch('/v1/stats', { headers: authHeaders(), cache: 'no-store' });
    if (response.ok) {
      showNotice($('stats-error'), '');
      renderStats(await response.json());
    } else {
      const body = await response.json().catch(() => ({}));
      const hint = response.status === 401 || response.status === 403 ? ' — rates need a token with the admin grant (tickwire token --admin)' : '';
      showNotice($('stats-error'), `/v1/stats: ${response.status} ${body?.error?.code ?? ''}${hint}`);
    }
  } catch (error) {
    showNotice($('stats-error'), `/v1/stats: ${error.message}`);
  }
}

async function pollHealth() {
  const badge = $('health');
  try {
    const response = await fetch('/readyz', { cache: 'no-store' });
    const text = (await response.text()).trim();
    badge.dataset.state = response.ok ? 'ok' : response.status === 404 ? 'unknown' : 'bad';
    badge.textContent = response.ok ? 'ready' : response.status === 404 ? 'health on metrics listener' : text;
  } catch {
    badge.dataset.state = 'bad';
    badge.textContent = 'unreachable';
  }
}

function every(ms, task) {
  const run = async () => {
    await task();
    setTimeout(run, ms);
  };
  run();
}

// ---- wiring ---------------------------------------------------------------

$('token').value = token;
$('auth').addEventListener('submit', (event) => {
  event.preventDefault();
  token = $('token').value.trim();
  previousStats = null;
  connect();
  pollStats();
});
$('ticker-form').addEventListener('submit', (event) => {
  event.preventDefault();
  ticker.subscribe();
});
$('tail-form').addEventListener('submit', (event) => {
  event.preventDefault();
  tail.paused = false;
  $('tail-pause').textContent = 'Pause';
  tail.subscribe();
});
$('tail-pause').addEventListener('click', () => {
  tail.paused = !tail.paused;
  $('tail-pause').textContent = tail.paused ? 'Resume' : 'Pause';
});

connect();
every(STATS_EVERY_MS, pollStats);
every(STATS_EVERY_MS, pollHealth);
