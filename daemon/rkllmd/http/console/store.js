// What the views share: the daemon's last status and model rows (from /v1/events),
// the reachability of the stream, and the tok/s of this page's last replies.

const listeners = new Set();

export const store = {
  status: null,
  models: [],
  connection: 'connecting',  // connecting | live | unreachable | locked
  connectionError: '',
  recentRates: [],
};

export function update(changes) {
  Object.assign(store, changes);
  for (const listener of listeners) listener(store);
}

export function subscribe(listener) {
  listeners.add(listener);
  listener(store);
}

export function recordRate(rate) {
  update({ recentRates: [...store.recentRates, rate].slice(-5) });
}
