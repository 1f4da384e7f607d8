// How numbers, ages and node ids read on screen (shared by the chat and the mesh view).

export function shortId(id) {
  return String(id ?? "").slice(0, 8);
}

/** A stable colour per node id, so one node looks the same in every view.
 *  No reds, greens or ambers: those mean health. */
const NODE_COLORS = ["#60a5fa", "#22d3ee", "#a78bfa", "#f472b6", "#2dd4bf", "#818cf8",
  "#38bdf8", "#e879f9", "#94a3b8", "#c084fc"];

export function nodeColor(id) {
  let hash = 2166136261;
  for (const ch of String(id ?? "")) hash = Math.imul(hash ^ ch.charCodeAt(0), 16777619);
  return NODE_COLORS[(hash >>> 0) % NODE_COLORS.length];
}

export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds ?? 0));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function age(seconds) {
  if (seconds == null) return "never";
  if (seconds < 1) return "just now";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s ago`;
  return `${duration(seconds)} ago`;
}

export function rate(tokensPerSecond) {
  const v = Number(tokensPerSecond ?? 0);
  if (v === 0) return "0";
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

export function millis(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

/** What a node is doing, in the words the legend uses. */
export function nodeState(node) {
  if (!node.healthy) return "down";
  if (node.queue_depth > 0) return "queued";
  if (node.active_requests > 0) return "busy";
  return "ok";
}

export const STATE_LABEL = { ok: "healthy", busy: "generating", queued: "queueing", down: "unhealthy" };

/** Create an element with a class and text; children are appended as given. */
export function el(tag, className, text, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  node.append(...children);
  return node;
}
