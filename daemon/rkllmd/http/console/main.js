// The console's entry: view switching (#state, #models, ...), the key dialog, and
// the live stream that feeds every view.

import { call, getKey, setKey } from './api.js';
import { mountApi, showApi } from './apidoc.js';
import { mountChat } from './chat.js';
import { mountModels } from './models.js';
import { mountPull } from './pull.js';
import { connect, mountState } from './state.js';
import { subscribe } from './store.js';

const VIEWS = ['state', 'models', 'chat', 'pull', 'api'];

function show() {
  const name = VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'state';
  for (const view of VIEWS) document.getElementById(`view-${view}`).hidden = view !== name;
  for (const link of document.querySelectorAll('#nav a')) link.classList.toggle('active', link.dataset.view === name);
  if (name === 'api') showApi();
}

async function showPermission() {
  const badge = document.getElementById('key-badge');
  const forget = document.getElementById('key-forget');
  forget.hidden = !getKey();
  if (!getKey()) { badge.hidden = true; return; }
  try {
    const { permission } = await call('GET', '/v1/auth/permission');
    badge.textContent = permission === 'admin' ? 'admin key' : 'API key (no management)';
    badge.hidden = false;
  } catch {
    badge.hidden = true;
  }
}

function askForKey(message) {
  const dialog = document.getElementById('key-dialog');
  const error = document.getElementById('key-error');
  error.textContent = message || '';
  error.hidden = !message;
  if (!dialog.open) dialog.showModal();
  document.getElementById('key-input').focus();
}

function setUpKeyDialog() {
  const form = document.getElementById('key-form');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = document.getElementById('key-input');
    setKey(input.value.trim());
    input.value = '';
    document.getElementById('key-dialog').close();
    connect();
    showPermission();
  });
  document.getElementById('key-forget').addEventListener('click', () => {
    setKey('');
    showPermission();
    connect();
  });
  // Any 401 means no key or a wrong one: ask, saying what the daemon answered.
  window.addEventListener('rkllmd:auth', (ev) => {
    askForKey(getKey() ? `The daemon refused this key: ${ev.detail.message}` : '');
  });
  // A dialog closed with Escape leaves the page locked: this button asks again.
  document.getElementById('key-ask').addEventListener('click', () => askForKey(''));
  subscribe((s) => {
    document.getElementById('key-ask').hidden = s.connection !== 'locked';
    if (s.connection === 'locked' && !document.getElementById('key-dialog').open) {
      askForKey(getKey() ? `The daemon refused this key: ${s.connectionError}` : '');
    }
  });
}

mountState(document.getElementById('view-state'));
mountModels(document.getElementById('view-models'));
mountChat(document.getElementById('view-chat'));
mountPull(document.getElementById('view-pull'));
mountApi(document.getElementById('view-api'));
setUpKeyDialog();
window.addEventListener('hashchange', show);
show();
connect();
showPermission();
