// The conversation: OpenAI chat completions against this node, streamed or whole,
// with who served each answer and how fast, and every failure said out loud.

import { renderMarkdown } from "./render.js";
import { mesh } from "./store.js";
import { el, millis, nodeColor, rate, shortId } from "./format.js";

const SETTINGS_KEY = "llamamesh.settings";
const DEFAULTS = { model: "", strategy: "load_balanced", maxTokens: 512, temperature: 0.7,
  stream: true, system: "" };
const STRATEGIES = ["load_balanced", "local", "fastest"];
const STRATEGY_HELP = {
  load_balanced: "The less loaded of two nodes picked at random.",
  fastest: "The node generating the most tokens per second.",
  local: "This node only; an error if it does not serve the model.",
};

const $ = (id) => document.getElementById(id);

const history = []; // {role, content} of finished turns, sent with every request
let inflight = null; // {controller, turn} while a request runs
let settings = loadSettings();
let knownModels = null; // the ids last read from /v1/models, joined

export function initChat() {
  const prompt = $("prompt");
  bindSettings();
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send(prompt.value);
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send(prompt.value);
    }
  });
  prompt.addEventListener("input", () => autosize(prompt));
  $("stop").addEventListener("click", stop);
  $("clear").addEventListener("click", clearChat);
  for (const button of document.querySelectorAll(".suggestion")) {
    button.addEventListener("click", () => send(button.textContent));
  }
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && inflight) stop(); // from anywhere on the page
  });
  // On a phone the settings are a sheet: the toggle, Done, or a tap outside close it.
  const toggle = $("settings-toggle");
  const panel = $("settings");
  const openSheet = (open) => {
    panel.classList.toggle("open", open);
    toggle.setAttribute("aria-expanded", String(open));
  };
  toggle.addEventListener("click", (event) => {
    event.stopPropagation();
    openSheet(!panel.classList.contains("open"));
  });
  $("settings-close").addEventListener("click", () => openSheet(false));
  document.addEventListener("click", (event) => {
    if (panel.classList.contains("open") && !panel.contains(event.target)) openSheet(false);
  });
  mesh.subscribe(onSnapshot);
  // Without the event stream (a proxy that buffers it), still offer the models.
  setTimeout(() => { if (knownModels === null) refreshModels(); }, 3000);
  prompt.focus();
}

// ---- settings -------------------------------------------------------------

function loadSettings() {
  try {
    return { ...DEFAULTS, ...JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}") };
  } catch {
    return { ...DEFAULTS };
  }
}

function saveSettings() {
  try { localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings)); } catch { /* private mode */ }
}

function bindSettings() {
  const strategy = $("strategy");
  const explain = () => { $("strategy-help").textContent = STRATEGY_HELP[strategy.value]; };
  strategy.value = STRATEGIES.includes(settings.strategy) ? settings.strategy : DEFAULTS.strategy;
  strategy.addEventListener("change", () => {
    settings.strategy = strategy.value;
    saveSettings();
    explain();
  });
  explain();

  const number = $("max-tokens");
  const range = $("max-tokens-range");
  const setMax = (value, from) => {
    const v = Math.min(2048, Math.max(1, Math.round(Number(value) || DEFAULTS.maxTokens)));
    settings.maxTokens = v;
    if (from !== number) number.value = v;
    range.value = v;
    $("max-tokens-out").textContent = v;
    saveSettings();
  };
  number.addEventListener("change", () => setMax(number.value));
  number.addEventListener("input", () => { if (number.value) setMax(number.value, number); });
  range.addEventListener("input", () => setMax(range.value));
  setMax(settings.maxTokens);

  const temperature = $("temperature");
  const setTemperature = (value) => {
    const v = Math.min(2, Math.max(0, Number(value)));
    settings.temperature = Number.isFinite(v) ? v : DEFAULTS.temperature;
    temperature.value = settings.temperature;
    $("temperature-out").textContent = settings.temperature.toFixed(2);
    saveSettings();
  };
  temperature.addEventListener("input", () => setTemperature(temperature.value));
  setTemperature(settings.temperature);

  const stream = $("stream");
  stream.checked = settings.stream !== false;
  stream.addEventListener("change", () => { settings.stream = stream.checked; saveSettings(); });

  const system = $("system");
  system.value = settings.system || "";
  system.addEventListener("input", () => { settings.system = system.value; saveSettings(); });

  const model = $("model");
  model.addEventListener("change", () => { settings.model = model.value; saveSettings(); });
  model.append(new Option("Looking for models…", ""));
}

// ---- models: /v1/models, re-read whenever the swarm's set changes ----------

function onSnapshot(snapshot) {
  const ids = snapshot.models.join("\n");
  if (ids !== knownModels) refreshModels();
  else labelModels();
}

async function refreshModels() {
  try {
    const response = await fetch("/v1/models", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const ids = (await response.json()).data.map((m) => m.id);
    knownModels = ids.join("\n");
    fillModels(ids);
  } catch (error) {
    $("model-help").textContent = `Could not list models: ${error.message}`;
  }
}

function fillModels(ids) {
  const select = $("model");
  const current = select.value || settings.model;
  const local = mesh.local?.models ?? [];
  select.replaceChildren(...ids.map((id) => new Option(id, id)));
  if (!ids.length) select.append(new Option("No models in the mesh", ""));
  const pick = [current, settings.model, ...local, ids[0]].find((id) => id && ids.includes(id));
  select.value = pick ?? "";
  labelModels();
}

/** Say how many nodes serve each model, and which one this node serves. */
function labelModels() {
  const snapshot = mesh.snapshot;
  if (!snapshot) return;
  for (const option of $("model").options) {
    if (!option.value) continue;
    const providers = snapshot.nodes.filter((n) => n.healthy && n.models.includes(option.value));
    const here = providers.some((n) => n.local);
    const count = providers.length;
    option.textContent = `${option.value} · ${count} node${count === 1 ? "" : "s"}`;
    option.title = here ? "served by this node too" : "served by peers only";
  }
}

// ---- the conversation -----------------------------------------------------

function autosize(area) {
  area.style.height = "auto";
  area.style.height = `${Math.min(area.scrollHeight, 220)}px`;
}

function clearChat() {
  if (inflight) stop();
  history.length = 0;
  const conversation = $("conversation");
  for (const node of [...conversation.children]) if (node.id !== "empty") node.remove();
  $("empty").hidden = false;
  $("prompt").focus();
}

function stop() {
  inflight?.controller.abort();
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
}

function scrollToEnd(force = false) {
  const box = $("conversation");
  const nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 160;
  if (force || nearEnd) box.scrollTop = box.scrollHeight;
}

async function send(text) {
  const content = String(text ?? "").trim();
  if (!content || inflight) return;
  const model = $("model").value;
  const prompt = $("prompt");
  prompt.value = "";
  autosize(prompt);
  $("empty").hidden = true;
  addUserMessage(content);
  const turn = new AnswerTurn();
  history.push({ role: "user", content });
  const messages = [...(settings.system.trim() ? [{ role: "system", content: settings.system }] : []),
    ...history];
  const body = { model, messages, max_tokens: settings.maxTokens,
    temperature: settings.temperature, stream: settings.stream, strategy: settings.strategy };
  if (settings.stream) body.stream_options = { include_usage: true };
  const controller = new AbortController();
  inflight = { controller, turn };
  setBusy(true);
  scrollToEnd(true);
  try {
    await complete(body, controller.signal, turn);
  } finally {
    inflight = null;
    setBusy(false);
    if (turn.text) history.push({ role: "assistant", content: turn.text });
    else history.pop(); // nothing came back: the question may be asked again as is
    scrollToEnd();
  }
}

async function complete(body, signal, turn) {
  let response;
  try {
    response = await fetch("/v1/chat/completions", {
      method: "POST", signal, body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: body.stream ? "text/event-stream" : "application/json" },
    });
  } catch (error) {
    if (signal.aborted) return turn.stopped();
    return turn.fail({ title: "Cannot reach this node", message: `The request did not get through (${error.message}). Is the node still running?` });
  }
  turn.servedBy(response.headers.get("X-Mesh-Node"), response.headers.get("X-Mesh-Route"));
  if (!response.ok) return turn.fail(await errorOf(response, body.model));
  try {
    if (body.stream) await readStream(response, turn);
    else await readWhole(response, turn);
  } catch (error) {
    if (signal.aborted) return turn.stopped();
    return turn.fail({ title: "Answer interrupted", message: `The connection broke before the answer was complete (${error.message}).` });
  }
}

async function readWhole(response, turn) {
  const answer = await response.json();
  const choice = answer.choices?.[0];
  const elapsed = performance.now() - turn.started;
  turn.append(choice?.message?.content ?? "");
  turn.finish({ finishReason: choice?.finish_reason, tokens: answer.usage?.completion_tokens,
    totalMs: elapsed, tokensPerSecond: answer.usage?.completion_tokens
      ? answer.usage.completion_tokens / (elapsed / 1000) : null });
}

async function readStream(response, turn) {
  let usage = null;
  let finishReason = null;
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") {
      turn.finish({ finishReason, ...turn.rates(usage?.completion_tokens) });
      return;
    }
    let event;
    try { event = JSON.parse(data); } catch { continue; }
    if (event.error) {
      return turn.fail(streamError(event.error), { partial: true });
    }
    if (event.usage) usage = event.usage;
    const choice = event.choices?.[0];
    const piece = choice?.delta?.content ?? choice?.text;
    if (piece) turn.append(piece);
    if (choice?.finish_reason) finishReason = choice.finish_reason;
  }
  turn.fail({ title: "Answer cut short", code: "stream_ended",
    message: "The stream closed before the node said it was done; the answer may be incomplete." },
  { partial: true });
}

/** The `data:` payloads of a server-sent event stream, one per event. */
async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const boundary = /\r?\n\r?\n/;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let match;
      while ((match = boundary.exec(buffer))) {
        const block = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        const data = block.split(/\r?\n/).filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
        if (data) yield data;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

async function errorOf(response, model) {
  let error = {};
  try { error = (await response.json()).error ?? {}; } catch { /* not JSON */ }
  const retry = response.headers.get("Retry-After");
  const message = error.message || `${response.status} ${response.statusText}`;
  const titles = {
    model_not_found: "Model not available",
    model_not_local: "Not served by this node",
    queue_full: "Queue full",
    no_provider_available: "The mesh is busy",
    context_length_exceeded: "Conversation too long",
  };
  let title = titles[error.code];
  if (!title) {
    if (response.status === 404) title = "Model not available";
    else if (response.status === 503) title = "The mesh is busy";
    else if (response.status === 413) title = "Message too large";
    else if (response.status >= 500) title = "The node failed";
    else title = "Request rejected";
  }
  const hint = response.status === 503 && retry ? ` Try again in ${retry} s.` : "";
  const none = response.status === 404 && !model ? " No model is available in the mesh yet." : "";
  return { title, message: message + hint + none, code: error.code || `http_${response.status}` };
}

function streamError(error) {
  const titles = { upstream_failed: "Answer interrupted", generation_failed: "Generation failed" };
  return { title: titles[error.code] ?? "Answer interrupted",
    message: error.message || "The stream ended with an error.", code: error.code };
}

// ---- what one answer looks like -------------------------------------------

function addUserMessage(content) {
  const row = el("div", "msg msg-user", null, el("div", "bubble", content));
  $("conversation").append(row);
}

const MESH_GLYPH = '<svg viewBox="0 0 32 32" aria-hidden="true"><path d="M16 6 L6 24 L26 24 Z M16 6 L16 17 M6 24 L16 17 L26 24"/><circle cx="16" cy="6" r="3.6"/><circle cx="6" cy="24" r="3.6"/><circle cx="26" cy="24" r="3.6"/><circle cx="16" cy="17" r="3.2"/></svg>';
const ALERT_GLYPH = '<svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="9.5"/><path d="M12 7.5v5.5M12 16.5v.01"/></svg>';

class AnswerTurn {
  constructor() {
    this.text = "";
    this.node = null;
    this.route = null;
    this.pending = false;
    this.started = performance.now();
    this.firstAt = null; // when the first piece of text arrived
    this.pieces = 0; // content events so far: one per token on every engine here
    const avatar = el("div", "avatar");
    avatar.innerHTML = MESH_GLYPH;
    this.answer = el("div", "answer streaming");
    this.thinking = el("div", "thinking", null, el("span"), el("span"), el("span"));
    this.answer.append(this.thinking);
    this.meta = el("div", "meta");
    this.body = el("div", "msg-body", null, this.answer, this.meta);
    this.row = el("div", "msg msg-assistant", null, avatar, this.body);
    this.row.dataset.status = "waiting";
    $("conversation").append(this.row);
  }

  servedBy(node, route) {
    this.node = node;
    this.route = route;
  }

  append(piece) {
    if (this.firstAt === null) this.firstAt = performance.now();
    this.pieces += 1;
    this.text += piece;
    this.row.dataset.status = "streaming";
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.render(false);
        scrollToEnd();
      });
    }
  }

  render(final) {
    renderMarkdown(this.answer, this.text, { final });
  }

  end(status) {
    this.row.dataset.status = status;
    this.answer.classList.remove("streaming");
    this.pending = false;
    if (this.text) this.render(true);
    else this.answer.replaceChildren();
  }

  /** Time to first token and generation rate so far; `tokens` from usage when known. */
  rates(tokens = this.pieces) {
    if (this.firstAt === null) return {};
    const span = (performance.now() - this.firstAt) / 1000;
    return { tokens, ttftMs: this.firstAt - this.started,
      tokensPerSecond: tokens > 1 && span > 0 ? (tokens - 1) / span : null };
  }

  finish({ finishReason, tokens, ttftMs = null, totalMs = null, tokensPerSecond }) {
    this.end("done");
    this.showMeta({ finishReason, tokens, ttftMs, totalMs, tokensPerSecond });
  }

  stopped() {
    this.end("stopped");
    if (!this.text) this.answer.append(el("p", "muted", "Stopped before the first token."));
    this.showMeta({ stopped: true, ...this.rates() });
  }

  fail({ title, message, code }, { partial = false } = {}) {
    this.end("error");
    const card = el("div", "error-card");
    card.setAttribute("role", "alert");
    card.innerHTML = ALERT_GLYPH;
    const words = el("div", null, null, el("div", "error-title", title),
      el("div", "error-text", message));
    if (code) words.append(el("div", "error-code", code));
    card.append(words);
    this.body.insertBefore(card, this.meta);
    if (partial || this.node) this.showMeta({ failed: true, ...this.rates() });
  }

  showMeta({ finishReason, tokens, ttftMs, totalMs, tokensPerSecond, stopped, failed }) {
    const chips = [];
    if (this.node) {
      const local = this.node === mesh.snapshot?.node_id;
      const known = mesh.node(this.node);
      const swatch = el("span", "swatch");
      swatch.style.background = nodeColor(this.node);
      const chip = el("span", "chip chip-node", null, swatch, el("code", null, shortId(this.node)));
      if (local) chip.append(" this node");
      chip.title = `Served by node ${this.node}${known ? ` (${known.url})` : ""}`;
      chip.dataset.node = this.node;
      chips.push(chip);
    }
    if (this.route) {
      const peer = this.route.startsWith("peer");
      const attempts = /attempts=(\d+)/.exec(this.route)?.[1];
      const label = peer ? `via peer${attempts && attempts !== "1" ? `, ${attempts} attempts` : ""}` : "local";
      const chip = el("span", "chip chip-route", "route ", el("b", null, label));
      chip.title = `X-Mesh-Route: ${this.route}`;
      chip.dataset.route = this.route;
      chips.push(chip);
    }
    if (ttftMs != null) chips.push(el("span", "chip chip-ttft", "first token ", el("b", null, millis(ttftMs))));
    if (totalMs != null) chips.push(el("span", "chip chip-total", "took ", el("b", null, millis(totalMs))));
    if (tokensPerSecond != null) chips.push(el("span", "chip chip-tps", null, el("b", null, rate(tokensPerSecond)), " tok/s"));
    if (tokens) chips.push(el("span", "chip chip-tokens", null, el("b", null, String(tokens)), tokens === 1 ? " token" : " tokens"));
    if (finishReason === "length") chips.push(el("span", "chip chip-warn", "hit max tokens"));
    if (stopped) chips.push(el("span", "chip chip-warn chip-stopped", "stopped"));
    if (failed && this.text) chips.push(el("span", "chip chip-warn", "incomplete"));
    this.meta.replaceChildren(...chips);
  }
}
