// The models view: the catalogue (live from /v1/events), filter, details, and the
// management actions (load with options, unload, delete after a confirmation).

import { call } from './api.js';
import { h, append, clear, bytes, toast } from './dom.js';
import { store, subscribe } from './store.js';

const ui = { filter: '', type: '', selected: null, busy: false, templates: null };

function matches(m) {
  const text = `${m.id} ${m.name || ''} ${m.description || ''} ${m.file || ''}`.toLowerCase();
  return (!ui.filter || text.includes(ui.filter.toLowerCase())) && (!ui.type || (m.type || 'chat') === ui.type);
}

async function act(label, work) {
  ui.busy = true;
  rerender();
  try {
    await work();
    toast(label, 'ok');
  } catch (err) {
    toast(`${err.message} (${err.code})`);
  } finally {
    ui.busy = false;
    rerender();
  }
}

function loadModel(m, form) {
  const data = new FormData(form);
  const ctx = data.get('ctx') ? Number(data.get('ctx')) : undefined;
  const template = data.get('template') || undefined;
  // TabbyAPI's body carries a template; RockchipLlama's carries NPU cores and pin.
  const body = template
    ? { model_name: m.id, max_seq_len: ctx, prompt_template: template }
    : { model: m.id, max_context_len: ctx, num_npu_core: data.get('cores') ? Number(data.get('cores')) : undefined, pin: data.get('pin') === 'on' };
  return act(`Loaded ${m.id}`, () => call('POST', '/v1/models/load', body));
}

function confirmDelete(m) {
  const dialog = document.getElementById('confirm-dialog');
  document.getElementById('confirm-title').textContent = `Delete ${m.id}?`;
  const body = clear(document.getElementById('confirm-body'));
  append(body, [
    h('p', {}, 'This removes from the models directory:'),
    h('ul', { id: 'confirm-files' }, h('li', {}, h('code', {}, m.file || m.id), ` (${bytes(m.size_bytes)})`)),
    m.loaded ? h('p', { class: 'error' }, 'The model is loaded: it is unloaded first.') : null,
    h('p', {}, 'It cannot be undone.'),
  ]);
  dialog.returnValue = '';
  dialog.onclose = () => {
    if (dialog.returnValue !== 'ok') return;
    act(`Deleted ${m.id}`, async () => {
      const done = await call('DELETE', `/v1/models/${encodeURIComponent(m.id)}?force=${m.loaded ? 'true' : 'false'}`);
      ui.selected = null;
      return done;
    });
  };
  dialog.showModal();
}

function templatesList() {
  if (ui.templates === null) {
    ui.templates = [];
    call('GET', '/v1/templates').then((r) => { ui.templates = r.data || []; rerender(); }).catch(() => {});
  }
  return h('datalist', { id: 'template-names' }, ui.templates.map((t) => h('option', { value: t })));
}

function details(m) {
  const source = m.source ? `${m.source.repo || ''}${m.source.revision ? `@${m.source.revision}` : ''}` : null;
  const rows = [
    ['Id', m.id], ['File', m.file], ['Format', m.format], ['Type', m.type || 'chat'],
    ['Context length', m.context_length], ['Size', bytes(m.size_bytes)], ['Architecture', m.architecture],
    ['Parameters', m.parameters], ['Quantization', m.quantization], ['Platform', m.platform],
    ['Source', source], ['Aliases', (m.aliases || []).join(', ')], ['Loaded', m.loaded ? 'yes' : 'no'],
  ];
  const props = h('pre', { id: 'model-props' }, 'Loading details…');
  call('GET', `/v1/models/${encodeURIComponent(m.id)}`)
    .then((card) => { props.textContent = JSON.stringify(card, null, 2); })
    .catch((err) => { props.textContent = err.message; });
  const rkllm = m.format === 'rkllm';
  return h('div', { id: 'model-details', class: 'panel' },
    h('h3', {}, m.name || m.id),
    m.description ? h('p', {}, m.description) : null,
    h('dl', { class: 'grid' }, rows.filter(([, v]) => v !== null && v !== undefined && v !== '')
      .map(([k, v]) => h('div', { class: 'item' }, h('dt', {}, k), h('dd', {}, v)))),
    h('details', {}, h('summary', {}, 'Card'), props),
    h('form', { id: 'load-form', class: 'row', onsubmit: (ev) => { ev.preventDefault(); loadModel(m, ev.target); } },
      h('label', {}, 'Context ', h('input', { name: 'ctx', type: 'number', min: 1, placeholder: String(m.context_length || 'default') })),
      h('label', {}, 'Template ', h('input', { name: 'template', list: 'template-names', placeholder: 'the model\'s own' })),
      templatesList(),
      rkllm ? h('label', {}, 'NPU cores ', h('input', { name: 'cores', type: 'number', min: 1, max: 3 })) : null,
      h('label', {}, h('input', { name: 'pin', type: 'checkbox' }), ' pin'),
      h('button', { id: 'load-button', type: 'submit', disabled: ui.busy }, m.loaded ? 'Reload' : 'Load')),
    h('div', { class: 'row' },
      m.loaded ? h('button', { id: 'unload-button', type: 'button', disabled: ui.busy, onclick: () => act('Unloaded', () => call('POST', '/v1/models/unload')) }, 'Unload') : null,
      h('button', { id: 'delete-button', type: 'button', class: 'danger', disabled: ui.busy, onclick: () => confirmDelete(m) }, 'Delete…')),
  );
}

let root = null;

function rerender() {
  if (!root) return;
  const focused = document.activeElement && document.activeElement.id;
  clear(root);
  const models = store.models.filter(matches);
  append(root, [
    h('h2', {}, 'Models'),
    h('div', { class: 'row' },
      h('input', { id: 'model-filter', type: 'search', placeholder: 'Filter', value: ui.filter, oninput: (ev) => { ui.filter = ev.target.value; rerender(); } }),
      h('select', { id: 'model-type', onchange: (ev) => { ui.type = ev.target.value; rerender(); } },
        ['', 'chat', 'embedding', 'image', 'speech', 'draft'].map((t) => h('option', { value: t, selected: t === ui.type }, t || 'all types')))),
    h('div', { class: 'scroll' }, h('table', { id: 'model-table' },
      h('thead', {}, h('tr', {}, ['Name', 'Type', 'Context', 'Size', 'Format', 'Source', 'Loaded'].map((c) => h('th', {}, c)))),
      h('tbody', {}, models.map((m) => h('tr', {
        'data-id': m.id,
        class: m.id === ui.selected ? 'selected' : '',
        onclick: () => { ui.selected = m.id; rerender(); },
      },
      h('td', {}, h('a', { href: '#models', class: 'model-name' }, m.name || m.id), h('div', { class: 'muted' }, m.id)),
      h('td', {}, m.type || 'chat'), h('td', {}, m.context_length ?? '—'), h('td', {}, bytes(m.size_bytes)),
      h('td', {}, m.format), h('td', {}, m.source ? m.source.repo : '—'), h('td', { class: 'loaded' }, m.loaded ? '● loaded' : '')))))),
    models.length ? null : h('p', { class: 'muted' }, store.models.length ? 'No model matches.' : 'No models yet: pull one.'),
  ]);
  const selected = store.models.find((m) => m.id === ui.selected);
  if (selected) root.append(details(selected));
  if (focused === 'model-filter') {
    const input = document.getElementById('model-filter');
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }
}

export function mountModels(el) {
  root = el;
  subscribe(() => {
    // Re-render on a new model list, not on every status event (keeps forms intact).
    if (store.models !== mountModels.last) { mountModels.last = store.models; rerender(); }
  });
}
