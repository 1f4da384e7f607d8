// The swarm as this node sees it: a picture, a table and the DHT's state,
// redrawn from each snapshot that GET /mesh/events pushes.

import { mesh } from "./store.js";
import { STATE_LABEL, age, duration, el, nodeColor, nodeState, rate, shortId } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

export function initMesh() {
  mesh.subscribe(render);
  // A phone gets a taller picture; redraw when the width class changes.
  let narrow = null;
  new ResizeObserver(() => {
    const now = isNarrow();
    if (now !== narrow && mesh.snapshot) renderGraph(mesh.snapshot);
    narrow = now;
  }).observe($("graph"));
}

function isNarrow() {
  const width = $("graph").clientWidth;
  return width > 0 && width < 520;
}

function render(snapshot) {
  renderStats(snapshot);
  renderGraph(snapshot);
  renderTable(snapshot);
  renderDht(snapshot);
  const count = snapshot.nodes.length;
  $("tab-mesh-count").textContent = String(count);
}

// ---- headline figures -------------------------------------------------------

function renderStats({ nodes, models }) {
  const healthy = nodes.filter((n) => n.healthy);
  const down = nodes.length - healthy.length;
  $("stat-nodes").textContent = String(nodes.length);
  $("stat-nodes-sub").textContent = down ? `${healthy.length} healthy · ${down} unhealthy` : "all healthy";
  $("stat-models").textContent = String(models.length);
  $("stat-models-sub").textContent = models.join(", ") || "none yet";
  const active = healthy.reduce((sum, n) => sum + n.active_requests, 0);
  const queued = healthy.reduce((sum, n) => sum + n.queue_depth, 0);
  $("stat-active").textContent = String(active);
  $("stat-active-sub").textContent = `${queued} waiting in queues`;
  $("stat-tps").textContent = rate(healthy.reduce((sum, n) => sum + n.tokens_per_second, 0));
}

// ---- the picture ------------------------------------------------------------

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text != null) node.textContent = text;
  return node;
}

/** This node in the middle, its peers on an ellipse around it (in id order, so
 *  nodes keep their places as others come and go). */
function layout(nodes, W, H) {
  const peers = nodes.filter((n) => !n.local);
  const n = peers.length;
  const r = n > 12 ? Math.max(10, 24 - (n - 12) * 0.6) : 24;
  const positions = new Map();
  const local = nodes.find((node) => node.local);
  const cx = W / 2;
  const cy = H / 2 - 10;
  const rx = W / 2 - 95;
  const ry = H / 2 - 75;
  // One or two peers sit level with this node; more go round it from the top.
  const start = n <= 2 && W > H ? 0 : -Math.PI / 2;
  if (local) positions.set(local.node_id, { x: cx, y: cy, r: 32 });
  peers.forEach((peer, i) => {
    const angle = start + (2 * Math.PI * i) / Math.max(n, 1);
    positions.set(peer.node_id, { x: cx + rx * Math.cos(angle), y: cy + ry * Math.sin(angle), r });
  });
  return { positions, labels: n <= 12 };
}

function renderGraph({ nodes }) {
  const graph = $("graph");
  const peers = nodes.length - 1;
  const [W, H] = isNarrow() ? [360, peers <= 1 ? 340 : 440] : [640, peers <= 2 ? 270 : 400];
  graph.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const { positions, labels } = layout(nodes, W, H);
  const local = nodes.find((n) => n.local);
  let edges = graph.querySelector("g.edges");
  let group = graph.querySelector("g.nodes");
  if (!edges) {
    edges = svg("g", { class: "edges" });
    group = svg("g", { class: "nodes" });
    graph.append(edges, group);
  }
  graph.querySelector(".empty-note")?.remove();
  if (nodes.length === 1) {
    graph.append(svg("text", { class: "empty-note", x: W / 2, y: H - 22 },
      "No peers yet: start another node with --bootstrap-nodes pointing here."));
  }

  // edges: this node to every peer it knows
  edges.replaceChildren(...nodes.filter((n) => !n.local && local).map((peer) => {
    const a = positions.get(local.node_id);
    const b = positions.get(peer.node_id);
    const state = nodeState(peer);
    const cls = state === "down" ? "edge down" : peer.active_requests || peer.queue_depth ? "edge active" : "edge";
    return svg("line", { class: cls, x1: a.x, y1: a.y, x2: b.x, y2: b.y });
  }));

  const seen = new Set();
  for (const node of nodes) {
    seen.add(node.node_id);
    const pos = positions.get(node.node_id);
    let g = group.querySelector(`g.node[data-node-id="${CSS.escape(node.node_id)}"]`);
    if (!g || Number(g.dataset.r) !== pos.r) {
      g?.remove();
      g = drawNode(node, pos.r);
      group.append(g);
    }
    updateNode(g, node, pos, labels);
  }
  for (const g of [...group.children]) if (!seen.has(g.dataset.nodeId)) g.remove();
}

function drawNode(node, r) {
  const g = svg("g", { class: `node${node.local ? " local" : ""}`, "data-node-id": node.node_id, "data-r": r });
  if (node.local) g.append(svg("circle", { class: "halo", r: r + 12 }));
  const circumference = 2 * Math.PI * r;
  g.append(
    svg("circle", { class: "pulse", r }),
    svg("circle", { class: "node-bg", r }),
    svg("circle", { class: "node-track", r: r - 0.5 }),
    svg("circle", { class: "node-load", r: r - 0.5, transform: "rotate(-90)",
      "stroke-dasharray": `0 ${circumference}` }),
    svg("circle", { class: "node-core", r: Math.max(3.5, r * 0.17), cx: r * 0.72, cy: -r * 0.72 }),
    svg("text", { class: "node-id", y: r > 18 ? -1 : 4 }),
    svg("text", { class: "node-tps", y: 12 }),
    svg("text", { class: "node-label", y: r + 20 }),
    svg("text", { class: "node-sub", y: r + 35 }),
  );
  if (node.local) g.append(svg("text", { class: "node-tag", y: -r - 18 }, "THIS NODE"));
  const title = svg("title");
  g.append(title);
  return g;
}

function updateNode(g, node, pos, labels) {
  const state = nodeState(node);
  g.setAttribute("transform", `translate(${pos.x.toFixed(1)} ${pos.y.toFixed(1)})`);
  g.dataset.state = state;
  g.dataset.healthy = String(node.healthy);
  const load = Math.min(1, node.outstanding / Math.max(node.capacity, 1));
  const circumference = 2 * Math.PI * (pos.r - 0.5);
  // Any outstanding request shows at least a sliver, so work is never invisible.
  const shown = node.outstanding > 0 ? Math.max(load, 0.06) : 0;
  const ring = g.querySelector(".node-load");
  ring.setAttribute("stroke-dasharray", `${(shown * circumference).toFixed(1)} ${circumference.toFixed(1)}`);
  ring.setAttribute("visibility", shown > 0 ? "visible" : "hidden");
  g.querySelector(".node-id").textContent = pos.r > 18 ? node.node_id.slice(0, 6) : "";
  g.querySelector(".node-tps").textContent = pos.r > 18 && node.healthy ? `${rate(node.tokens_per_second)} t/s` : "";
  g.querySelector(".node-label").textContent = labels ? node.models.join(", ") : "";
  const activity = node.healthy
    ? `${node.active_requests} active · ${node.queue_depth} queued`
    : `unhealthy · seen ${age(node.last_seen_s)}`;
  g.querySelector(".node-sub").textContent = labels ? activity : "";
  g.querySelector("title").textContent =
    `${node.node_id}\n${node.url}\n${node.models.join(", ")}\n${STATE_LABEL[state]}: ${activity}`;
}

// ---- the table --------------------------------------------------------------

function renderTable({ nodes }) {
  const body = $("nodes").tBodies[0];
  const rows = nodes.map((node) => {
    const state = nodeState(node);
    const swatch = el("span", "swatch");
    swatch.style.background = nodeColor(node.node_id);
    const id = el("span", "node-cell", null, swatch, el("span", null, shortId(node.node_id)));
    id.title = node.node_id;
    if (node.local) id.append(el("span", "you", "you"));
    const models = el("td", null, null, ...node.models.map((m) => el("span", "model-chip", m)));
    const row = el("tr", [node.local ? "local" : "", state === "down" ? "down" : ""].join(" ").trim(), null,
      el("td", null, null, id),
      el("td", "url", node.url),
      models,
      el("td", "num", String(node.queue_depth)),
      el("td", "num", String(node.active_requests)),
      el("td", "num", rate(node.tokens_per_second)),
      el("td", "num", duration(node.uptime_s)),
      el("td", null, null, el("span", `pill ${state}`, STATE_LABEL[state])),
      el("td", "num", node.local ? "—" : age(node.last_seen_s)),
    );
    row.dataset.nodeId = node.node_id;
    row.dataset.healthy = String(node.healthy);
    return row;
  });
  body.replaceChildren(...rows);
  const peers = nodes.length - 1;
  $("table-note").textContent = `${peers} peer${peers === 1 ? "" : "s"} from the DHT, probed every second`;
}

// ---- the DHT ----------------------------------------------------------------

function renderDht({ dht }) {
  const state = $("dht-state");
  const alone = dht.bootstrap_nodes.length === 0;
  state.className = `pill ${dht.bootstrapped || alone ? "ok" : "queued"}`;
  state.textContent = dht.bootstrapped ? "bootstrapped" : alone ? "seed node" : "joining";
  const peers = el("span", "peers", null, ...dht.peers.slice(0, 8).map((p) => el("code", null, p)));
  if (dht.peers.length > 8) peers.append(el("span", "muted", `+${dht.peers.length - 8} more`));
  if (!dht.peers.length) peers.append(el("span", "muted", "none"));
  const rows = [
    ["UDP port", String(dht.dht_port)],
    ["Routing table", `${dht.routing_table_size} contact${dht.routing_table_size === 1 ? "" : "s"}`],
    ["Contacts", peers],
    ["Bootstrap", dht.bootstrap_nodes.join(", ") || "none (this node seeds)"],
    ["Keys published", `${dht.keys_published}`],
    ["Publishes", `${dht.publishes}${dht.publish_errors ? ` (${dht.publish_errors} failed)` : ""}`],
    ["Last publish", age(dht.last_publish_age_s)],
    ["Lookups", `${dht.lookups}${dht.lookup_errors ? ` (${dht.lookup_errors} failed)` : ""}`],
  ];
  $("dht").replaceChildren(...rows.flatMap(([key, value]) => [
    el("dt", null, key), el("dd", null, null, value),
  ]));
}
