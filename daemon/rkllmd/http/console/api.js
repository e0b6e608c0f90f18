// The daemon's HTTP API as the page uses it: the key from session storage in a
// header (never in a URL), errors in one shape, and server-sent events read from
// fetch (EventSource cannot send headers).

const KEY = 'rkllmd.key';

export const getKey = () => sessionStorage.getItem(KEY) || '';
export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  const key = getKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

// Every dialect's error body: {error: {message, code}}, {detail, code}, {error, code}.
export function errorOf(body, status, fallback) {
  const err = body && body.error;
  const message = (err && err.message) || (typeof err === 'string' ? err : null)
    || (body && body.detail) || fallback || `HTTP ${status}`;
  const code = (err && err.code) || (body && body.code) || String(status);
  return new ApiError(status, code, message);
}

async function failure(resp, sentKey) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  const error = errorOf(body, resp.status, resp.statusText);
  // A refusal of a key the user has replaced since is old news: only the key in use counts.
  if (resp.status === 401 && sentKey === getKey()) {
    window.dispatchEvent(new CustomEvent('rkllmd:auth', { detail: error }));
  }
  return error;
}

export async function call(method, path, body, { signal } = {}) {
  const sentKey = getKey();
  const init = { method, signal, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp, sentKey);
  const type = resp.headers.get('Content-Type') || '';
  return type.includes('json') ? resp.json() : resp.text();
}

// Yields {event, data} for each server-sent event; data is parsed JSON when it is JSON.
export async function* events(method, path, body, signal) {
  const extra = { Accept: 'text/event-stream' };
  if (body !== undefined) extra['Content-Type'] = 'application/json';
  const sentKey = getKey();
  const init = { method, signal, headers: headers(extra) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp, sentKey);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const parsed = parseBlock(block);
      if (parsed) yield parsed;
    }
  }
}

function parseBlock(block) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  if (!data.length) return null;  // a comment (keep-alive)
  const text = data.join('\n');
  try { return { event, data: JSON.parse(text) }; } catch { return { event, data: text }; }
}
