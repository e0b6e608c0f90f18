// The pull view: POST /v1/models/download with SSE progress (bytes, rate, ETA);
// Cancel aborts the request, and the daemon cancels a pull nobody waits for
// (what was fetched stays staged, so pulling again resumes).

import { events, errorOf } from './api.js';
import { h, append, clear, bytes, duration, toast } from './dom.js';

const pull = { controller: null, progress: null, outcome: null, error: null };
const parts = {};

function patterns(text) {
  return text.split(/[\s,]+/).map((p) => p.trim()).filter(Boolean);
}

async function start(form) {
  const data = new FormData(form);
  const body = { repo_id: String(data.get('repo')).trim(), include: patterns(String(data.get('include'))), stream: true };
  const revision = String(data.get('revision') || '').trim();
  if (revision) body.revision = revision;
  pull.controller = new AbortController();
  pull.progress = { stage: 'starting' };
  pull.outcome = null;
  pull.error = null;
  render();
  try {
    for await (const { data: event } of events('POST', '/v1/models/download', body, pull.controller.signal)) {
      if (event.error) throw errorOf(event, 500);
      if (event.stage === 'done') {
        const result = event.result || {};
        pull.outcome = `Pulled ${result.repo || body.repo_id}: ${(result.models || []).join(', ') || 'done'}`;
        break;
      }
      pull.progress = event;
      render();
    }
  } catch (err) {
    pull.error = err.name === 'AbortError' ? 'Cancelled; pulling the same repo again resumes.' : `${err.message} (${err.code})`;
  }
  pull.controller = null;
  render();
  if (pull.outcome) toast(pull.outcome, 'ok');
}

function progressView(p) {
  const bar = h('progress', { id: 'pull-bar', max: 1 });
  if (typeof p.fraction === 'number') bar.value = p.fraction;
  const facts = [
    p.stage,
    p.file ? `${p.file}${p.files_total ? ` (${p.file_index}/${p.files_total})` : ''}` : null,
    p.total ? `${bytes(p.bytes)} of ${bytes(p.total)}` : null,
    p.rate ? `${bytes(p.rate)}/s` : null,
    p.eta_s !== null && p.eta_s !== undefined ? `ETA ${duration(p.eta_s)}` : null,
  ].filter(Boolean);
  return h('div', { id: 'pull-progress', class: 'panel' }, bar, h('p', { id: 'pull-facts' }, facts.join(' · ')));
}

// Only the buttons and the outcome change: the form keeps what the user typed.
function render() {
  const running = pull.controller !== null;
  parts.start.disabled = running;
  parts.cancel.disabled = !running;
  append(clear(parts.outcome), [
    pull.progress && running ? progressView(pull.progress) : null,
    pull.outcome ? h('p', { id: 'pull-outcome', class: 'ok' }, pull.outcome) : null,
    pull.error ? h('p', { id: 'pull-error', class: 'error' }, pull.error) : null,
  ]);
}

export function mountPull(root) {
  parts.start = h('button', { id: 'pull-start', type: 'submit' }, 'Pull');
  parts.cancel = h('button', { id: 'pull-cancel', type: 'button', onclick: () => pull.controller && pull.controller.abort() }, 'Cancel');
  parts.outcome = h('div', { id: 'pull-status' });
  root.append(
    h('h2', {}, 'Pull a model'),
    h('form', { id: 'pull-form', class: 'stack', onsubmit: (ev) => { ev.preventDefault(); if (!pull.controller) start(ev.target); } },
      h('label', {}, 'Repository ', h('input', { id: 'pull-repo', name: 'repo', required: true, placeholder: 'owner/name', pattern: '\\S+/\\S+' })),
      h('label', {}, 'Include patterns ', h('input', { id: 'pull-include', name: 'include', placeholder: '*Q4_K_M.gguf (space or comma separated; empty: the repo\'s model files)' })),
      h('label', {}, 'Revision ', h('input', { id: 'pull-revision', name: 'revision', placeholder: 'main' })),
      h('div', { class: 'row' }, parts.start, parts.cancel)),
    parts.outcome,
  );
  render();
}
