// Start the page: the two views, the theme, and the live mesh stream they share.

import { initChat } from "./chat.js";
import { initMesh } from "./mesh.js";
import { renderMarkdown } from "./render.js";
import { mesh } from "./store.js";

const $ = (id) => document.getElementById(id);
const THEME_KEY = "llamamesh.theme";
const VIEWS = ["chat", "mesh"];

function showView(name) {
  const view = VIEWS.includes(name) ? name : "chat";
  for (const other of VIEWS) {
    $(`view-${other}`).hidden = other !== view;
    $(`tab-${other}`).setAttribute("aria-selected", String(other === view));
  }
  if (view === "chat") $("prompt").focus({ preventScroll: true });
}

function initTabs() {
  for (const name of VIEWS) {
    $(`tab-${name}`).addEventListener("click", () => {
      history.replaceState(null, "", name === "chat" ? location.pathname : `#${name}`);
      showView(name);
    });
  }
  window.addEventListener("hashchange", () => showView(location.hash.slice(1)));
  showView(location.hash.slice(1));
}

function initTheme() {
  const button = $("theme-toggle");
  const order = ["auto", "dark", "light"];
  const apply = (theme) => {
    if (theme === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = theme;
    button.title = `Theme: ${theme}`;
  };
  let theme = document.documentElement.dataset.theme || "auto";
  apply(theme);
  button.addEventListener("click", () => {
    theme = order[(order.indexOf(theme) + 1) % order.length];
    apply(theme);
    try {
      if (theme === "auto") localStorage.removeItem(THEME_KEY);
      else localStorage.setItem(THEME_KEY, theme);
    } catch { /* storage disabled */ }
  });
}

/** One EventSource for the whole page; the browser reconnects by itself. */
function connectMesh() {
  const live = $("live");
  const text = $("live-text");
  const show = (state, words) => {
    live.dataset.state = state;
    text.textContent = words;
  };
  let lastEvent = 0;
  const source = new EventSource("/mesh/events");
  source.addEventListener("snapshot", (event) => {
    lastEvent = Date.now();
    const snapshot = JSON.parse(event.data);
    const n = snapshot.nodes.length;
    show("live", `live · ${n} node${n === 1 ? "" : "s"}`);
    live.title = `Live mesh updates from node ${snapshot.node_id}`;
    mesh.publish(snapshot);
  });
  source.addEventListener("error", () => {
    show(source.readyState === EventSource.CLOSED ? "offline" : "connecting",
      source.readyState === EventSource.CLOSED ? "offline" : "reconnecting");
  });
  // Snapshots come at least every 2 s; silence for longer means the node is gone.
  setInterval(() => {
    if (lastEvent && Date.now() - lastEvent > 7000 && live.dataset.state === "live") {
      show("connecting", "no updates");
    }
  }, 1000);
}

initTheme();
initTabs();
initChat();
initMesh();
connectMesh();

// For tests and the curious: the exact renderer the chat uses for answers.
window.llamamesh = Object.freeze({ renderMarkdown, mesh });
