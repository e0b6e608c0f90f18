// The API view: /openapi.json with every $ref resolved, so each request body reads
// in place.

import { call } from './api.js';
import { h, clear } from './dom.js';

const PREFIX = '#/components/schemas/';

export function resolve(node, schemas, seen = new Set()) {
  if (Array.isArray(node)) return node.map((n) => resolve(n, schemas, seen));
  if (!node || typeof node !== 'object') return node;
  const ref = node.$ref;
  if (typeof ref === 'string' && ref.startsWith(PREFIX)) {
    const name = ref.slice(PREFIX.length);
    if (!(name in schemas) || seen.has(name)) return node;  // recursive: left as is
    const { $ref, ...rest } = node;
    return resolve({ ...schemas[name], ...rest }, schemas, new Set([...seen, name]));
  }
  return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, resolve(v, schemas, seen)]));
}

let root = null;
let spec = null;
let filter = '';

function operations() {
  const schemas = (spec.components && spec.components.schemas) || {};
  const out = [];
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const text = `${method} ${path} ${op.summary || ''}`.toLowerCase();
      if (filter && !text.includes(filter)) continue;
      const schema = op.requestBody && op.requestBody.content['application/json'].schema;
      out.push(h('details', { class: 'op' },
        h('summary', {}, h('code', { class: `method ${method}` }, method.toUpperCase()), ' ', h('code', {}, path), ' ', h('span', { class: 'muted' }, op.summary || '')),
        schema ? h('pre', { class: 'schema' }, JSON.stringify(resolve(schema, schemas), null, 2)) : h('p', { class: 'muted' }, 'No request body.'),
        op.parameters ? h('pre', {}, JSON.stringify(op.parameters, null, 2)) : null));
    }
  }
  return out;
}

function render() {
  clear(root);
  root.append(h('h2', {}, 'API'), h('p', {}, h('a', { href: '/openapi.json' }, 'openapi.json'), ' · ', h('a', { href: '/docs' }, '/docs')));
  if (!spec) { root.append(h('p', {}, 'Loading…')); return; }
  root.append(
    h('input', { id: 'api-filter', type: 'search', placeholder: 'Filter routes', value: filter, oninput: (ev) => { filter = ev.target.value.toLowerCase(); list.replaceChildren(...operations()); } }),
  );
  const list = h('div', { id: 'api-list' }, operations());
  root.append(list);
}

export function mountApi(el) {
  root = el;
  render();
}

export function showApi() {
  if (spec) return;
  call('GET', '/openapi.json').then((s) => { spec = s; render(); }).catch((err) => {
    clear(root).append(h('h2', {}, 'API'), h('p', { class: 'error' }, err.message));
  });
}
