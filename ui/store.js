// The latest mesh snapshot from GET /mesh/events, and who wants to hear of it.

const listeners = new Set();
let current = null;

export const mesh = {
  get snapshot() { return current; },
  /** The node serving this page, once the first snapshot has come. */
  get local() { return current?.nodes.find((n) => n.local) ?? null; },
  node(id) { return current?.nodes.find((n) => n.node_id === id) ?? null; },
  subscribe(listener) {
    listeners.add(listener);
    if (current) listener(current);
    return () => listeners.delete(listener);
  },
  publish(snapshot) {
    current = snapshot;
    for (const listener of listeners) listener(snapshot);
  },
};
