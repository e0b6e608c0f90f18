// The state view and the live stream behind it (GET /v1/events), with the banner.

import { events, ApiError } from './api.js';
import { h, clear, bytes, duration } from './dom.js';
import { store, subscribe, update } from './store.js';

let controller = null;
let retryTimer = null;

export function connect() {
  if (controller) controller.abort();
  clearTimeout(retryTimer);
  controller = new AbortController();
  listen(controller.signal, 1);
}

async function listen(signal, attempt) {
  try {
    for await (const { event, data } of events('GET', '/v1/events', undefined, signal)) {
      attempt = 1;
      if (event === 'status') update({ status: data, connection: 'live', connectionError: '' });
      else if (event === 'models') update({ models: data.data });
    }
    if (signal.aborted) return;
    update({ connection: 'unreachable', connectionError: 'the daemon closed the stream' });
  } catch (err) {
    if (signal.aborted) return;
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      update({ connection: 'locked', connectionError: err.message });
      return;  // the key dialog reconnects once a key is given
    }
    update({ connection: 'unreachable', connectionError: err.message });
  }
  // Back off: 1, 2, 4 ... 30 s between attempts, never a storm.
  const wait = Math.min(30, 2 ** (attempt - 1)) * 1000;
  retryTimer = setTimeout(() => { if (!signal.aborted) listen(signal, attempt + 1); }, wait);
}

function banner(s) {
  const el = document.getElementById('banner');
  let text = '';
  let kind = 'warn';
  if (s.connection === 'unreachable') {
    text = `The daemon is unreachable (${s.connectionError}); retrying…`;
    kind = 'error';
  } else if (s.connection === 'locked') {
    text = `Access refused: ${s.connectionError}`;
    kind = 'error';
  } else if (s.status && s.status.state === 'loading') {
    text = `Loading ${s.status.model || 'a model'}…`;
  } else if (s.status && s.status.state === 'failed') {
    text = `Load failed: ${s.status.reason || 'unknown reason'}`;
    kind = 'error';
  } else if (s.status && s.status.load_failure) {
    const f = s.status.load_failure;
    text = `Loading ${f.model} failed (${f.code}: ${f.reason})` + (f.restored ? `; ${f.restored} serves again` : '');
  }
  el.textContent = text;
  el.className = `banner ${kind}`;
  el.hidden = !text;
  el.dataset.state = s.status ? s.status.state : s.connection;
}

const item = (label, value, id) => h('div', { class: 'item' }, h('dt', {}, label), h('dd', { id }, value ?? '—'));

function render(root, s) {
  clear(root);
  root.append(h('h2', {}, 'State'));
  const st = s.status;
  if (!st) {
    root.append(h('p', { id: 'state-connection' }, s.connection === 'connecting' ? 'Connecting…' : s.connectionError));
    return;
  }
  const processor = st.format === 'rkllm' ? 'NPU' : st.format ? 'CPU' : null;
  const c = st.counters || {};
  const rates = s.recentRates.length ? s.recentRates.map((r) => r.toFixed(1)).join(', ') : null;
  root.append(h('dl', { class: 'grid' },
    item('State', st.state, 'state-value'),
    item('Resident model', st.model, 'state-model'),
    item('Runs on', processor),
    item('Worker pid', st.worker_pid),
    item('Worker memory', st.worker_rss_bytes ? bytes(st.worker_rss_bytes) : null),
    item('Pinned', st.pinned ? 'yes' : 'no'),
    item('Embedding model', st.embedding ? st.embedding.model : null),
    item('Queue', `${st.queue.waiting} waiting (max ${st.queue.max})`),
    item('Slots', `${st.slots.busy} busy of ${st.slots.total}`),
    item('Generations', `${c.generations ?? 0} (${c.completed ?? 0} completed, ${c.aborted ?? 0} aborted, ${c.failed ?? 0} failed)`, 'state-counters'),
    item('Tokens generated', c.completion_tokens),
    item('tok/s (this page, last replies)', rates),
    item('Uptime', duration(st.uptime_s)),
    item('Version', st.version),
  ));
  if (st.options && Object.keys(st.options).length) {
    root.append(h('h3', {}, 'Load options'), h('pre', {}, JSON.stringify(st.options, null, 2)));
  }
}

export function mountState(root) {
  subscribe((s) => { banner(s); render(root, s); });
}
