// The chat view: a streamed OpenAI chat (POST /v1/chat/completions, stream: true)
// with a system prompt and sampling settings; Stop aborts the request, which makes
// the daemon abort the generation. The conversation stays in this browser.

import { events, errorOf } from './api.js';
import { h, clear, toast } from './dom.js';
import { markdown, splitReasoning } from './markdown.js';
import { store, subscribe, recordRate } from './store.js';

const SAVED = 'rkllmd.chat';
const DEFAULTS = { model: '', system: '', temperature: '', top_p: '', max_tokens: '256', seed: '' };

function restore() {
  try {
    const saved = JSON.parse(localStorage.getItem(SAVED) || '{}');
    return { settings: { ...DEFAULTS, ...(saved.settings || {}) }, messages: Array.isArray(saved.messages) ? saved.messages : [] };
  } catch {
    return { settings: { ...DEFAULTS }, messages: [] };
  }
}

const chat = { ...restore(), controller: null };

function save() {
  try {
    localStorage.setItem(SAVED, JSON.stringify({ settings: chat.settings, messages: chat.messages }));
  } catch {
    toast('The conversation is too large to keep in this browser (images?); it is kept until the page closes.');
  }
}

// Images picked for the next message, as data: URLs (OpenAI's image_url parts).
let pending = [];

function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function content(m) {
  if (!m.images || !m.images.length) return m.content;
  return [{ type: 'text', text: m.content }, ...m.images.map((url) => ({ type: 'image_url', image_url: { url } }))];
}

function stats(msg) {
  if (!msg.stats) return null;
  const s = msg.stats;
  const parts = [];
  if (s.prompt_tokens !== undefined) parts.push(`${s.prompt_tokens} prompt`);
  parts.push(`${s.completion_tokens}${s.counted ? ' (counted)' : ''} completion tokens`);
  if (s.rate) parts.push(`${s.rate.toFixed(1)} tok/s`);
  if (msg.stopped) parts.push('stopped');
  return h('div', { class: 'stats muted' }, parts.join(' · '));
}

function messageElement(msg) {
  const { reasoning, answer } = splitReasoning(msg.content || '');
  const thought = (msg.reasoning || '') + reasoning;
  return h('div', { class: `msg ${msg.role}` },
    h('div', { class: 'role' }, msg.role),
    thought ? h('details', { class: 'reasoning' }, h('summary', {}, 'Reasoning'), h('div', { class: 'muted' }, thought)) : null,
    msg.role === 'assistant' ? markdown(answer) : h('div', { class: 'plain' }, answer),
    msg.images && msg.images.length ? h('div', { class: 'thumbs' }, msg.images.map((src) => h('img', { src, alt: 'attached image' }))) : null,
    msg.error ? h('p', { class: 'error' }, msg.error) : null,
    stats(msg));
}

function requestBody(settings) {
  const messages = [];
  if (settings.system.trim()) messages.push({ role: 'system', content: settings.system });
  for (const m of chat.messages) {
    if (!m.error && m.content) messages.push({ role: m.role, content: content(m) });
  }
  const body = { model: settings.model || (store.status && store.status.model) || '', messages, stream: true, stream_options: { include_usage: true } };
  for (const name of ['temperature', 'top_p', 'max_tokens', 'seed']) {
    if (settings[name] !== '') body[name] = Number(settings[name]);
  }
  return body;
}

async function send(text) {
  chat.messages.push(pending.length ? { role: 'user', content: text, images: pending } : { role: 'user', content: text });
  pending = [];
  const reply = { role: 'assistant', content: '', reasoning: '' };
  const body = requestBody(chat.settings);
  chat.messages.push(reply);
  chat.controller = new AbortController();
  render();
  const log = document.getElementById('chat-log');
  const live = log.lastElementChild;
  let first = 0;
  let last = 0;
  let pieces = 0;
  let usage = null;
  let current = live;
  try {
    for await (const { data } of events('POST', '/v1/chat/completions', body, chat.controller.signal)) {
      if (data === '[DONE]') break;
      if (data.error) throw errorOf(data, 500);
      if (data.usage) usage = data.usage;
      const delta = (data.choices && data.choices[0] && data.choices[0].delta) || {};
      const piece = (delta.content || '') + (delta.reasoning_content || '');
      if (!piece) continue;
      last = performance.now();
      if (!first) first = last;
      pieces += 1;
      reply.content += delta.content || '';
      reply.reasoning += delta.reasoning_content || '';
      const el = messageElement(reply);
      current.replaceWith(el);
      current = el;
      log.scrollTop = log.scrollHeight;
    }
  } catch (err) {
    if (err.name === 'AbortError') reply.stopped = true;
    else reply.error = `${err.message}${err.code ? ` (${err.code})` : ''}`;
  }
  const completion = usage ? usage.completion_tokens : pieces;
  const rate = completion > 1 && last > first ? ((completion - 1) * 1000) / (last - first) : null;
  if (!reply.error) reply.stats = { prompt_tokens: usage ? usage.prompt_tokens : undefined, completion_tokens: completion, counted: !usage, rate };
  if (rate) recordRate(rate);
  chat.controller = null;
  save();
  render();
}

let root = null;

function field(name, label, attrs = {}) {
  return h('label', {}, `${label} `, h('input', {
    id: `chat-${name}`, name, value: chat.settings[name], ...attrs,
    onchange: (ev) => { chat.settings[name] = ev.target.value; save(); },
  }));
}

function render() {
  if (!root) return;
  clear(root);
  const chatModels = store.models.filter((m) => (m.type || 'chat') === 'chat');
  const resident = store.status && store.status.model;
  const streaming = chat.controller !== null;
  root.append(
    h('h2', {}, 'Chat'),
    h('details', { class: 'panel', id: 'chat-settings' }, h('summary', {}, 'Settings'),
      h('div', { class: 'row' },
        h('label', {}, 'Model ', h('select', { id: 'chat-model', onchange: (ev) => { chat.settings.model = ev.target.value; save(); } },
          h('option', { value: '' }, resident ? `resident (${resident})` : 'resident model'),
          chatModels.map((m) => h('option', { value: m.id, selected: m.id === chat.settings.model }, m.id)))),
        field('temperature', 'Temperature', { type: 'number', step: '0.05', min: 0, max: 2 }),
        field('top_p', 'top_p', { type: 'number', step: '0.05', min: 0, max: 1 }),
        field('max_tokens', 'Max tokens', { type: 'number', min: 1 }),
        field('seed', 'Seed', { type: 'number' })),
      h('label', { class: 'block' }, 'System prompt', h('textarea', {
        id: 'chat-system', rows: 2,
        onchange: (ev) => { chat.settings.system = ev.target.value; save(); },
      }, chat.settings.system))),
    h('div', { id: 'chat-log', class: 'log' }, chat.messages.map(messageElement)),
    h('form', { id: 'chat-form', class: 'row', onsubmit: (ev) => {
      ev.preventDefault();
      const input = document.getElementById('chat-input');
      const text = input.value.trim();
      if (!text || chat.controller) return;
      input.value = '';
      send(text).catch((err) => toast(err.message));
    } },
    h('textarea', { id: 'chat-input', rows: 2, placeholder: 'Message', class: 'grow' }),
    store.status && store.status.vision ? h('label', { class: 'small' }, 'Images ', h('input', {
      id: 'chat-images', type: 'file', accept: 'image/jpeg,image/png,image/webp', multiple: true,
      onchange: async (ev) => {
        try { pending = await Promise.all([...ev.target.files].map(readImage)); } catch (err) { toast(err.message); }
      },
    })) : null,
    h('button', { id: 'chat-send', type: 'submit', disabled: streaming }, 'Send'),
    h('button', { id: 'chat-stop', type: 'button', disabled: !streaming, onclick: () => chat.controller && chat.controller.abort() }, 'Stop'),
    h('button', { id: 'chat-clear', type: 'button', disabled: streaming, onclick: () => { chat.messages = []; save(); render(); } }, 'Clear')),
  );
  const log = document.getElementById('chat-log');
  log.scrollTop = log.scrollHeight;
}

export function mountChat(el) {
  root = el;
  let models = null;
  let vision = null;
  subscribe(() => {
    // A new model list changes the model picker, a new resident model whether images
    // may be attached; other status events leave the log alone.
    const sees = Boolean(store.status && store.status.vision);
    if ((store.models !== models || sees !== vision) && !chat.controller) {
      models = store.models;
      vision = sees;
      render();
    }
  });
}
