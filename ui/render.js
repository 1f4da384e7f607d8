// Model output → safe DOM. Markdown by marked, with every piece of raw HTML in
// the output turned back into visible text (a model that writes <script> shows
// "<script>", it never runs); DOMPurify then cleans what marked produced, and
// the page's Content-Security-Policy forbids inline script as a last wall.
// Code blocks are highlighted by highlight.js and get a copy button.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const PURIFY = {
  FORBID_TAGS: ["style", "script", "iframe", "object", "embed", "form", "input", "button",
    "textarea", "select", "option", "link", "meta", "base", "svg", "math", "img", "video", "audio"],
  FORBID_ATTR: ["style", "srcset", "action", "formaction"],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

let parser = null;

function markdown() {
  if (parser) return parser;
  parser = new window.marked.Marked({
    gfm: true,
    breaks: true,
    renderer: {
      // Raw HTML, block or inline, is shown as the text it is.
      html(token) {
        const text = escapeHtml(token.text ?? token.raw ?? "");
        return token.block ? `<p>${text}</p>` : text;
      },
      // No image is fetched on a model's say-so: show what it wrote.
      image(token) {
        return escapeHtml(token.raw ?? "");
      },
    },
  });
  window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  });
  return parser;
}

/** Render `text` (Markdown from a model) into `target`, replacing its children.
 *  `final`: the answer is complete, so code without a language may be auto-detected. */
export function renderMarkdown(target, text, { final = true } = {}) {
  const html = markdown().parse(String(text ?? ""));
  const fragment = window.DOMPurify.sanitize(html, PURIFY);
  for (const code of fragment.querySelectorAll("pre > code")) decorateCode(code, final);
  target.replaceChildren(fragment);
}

function decorateCode(code, final) {
  const pre = code.parentElement;
  const match = /(?:^|\s)language-([\w+#.-]+)/.exec(code.className);
  const language = match ? match[1] : "";
  const hljs = window.hljs;
  if (hljs) {
    if (language && hljs.getLanguage(language)) {
      code.innerHTML = hljs.highlight(code.textContent, { language, ignoreIllegals: true }).value;
      code.classList.add("hljs");
    } else if (final && !language && code.textContent.length < 20000) {
      const result = hljs.highlightAuto(code.textContent);
      code.innerHTML = result.value;
      code.classList.add("hljs");
    }
  }
  const block = document.createElement("div");
  block.className = "codeblock";
  const head = document.createElement("div");
  head.className = "codeblock-head";
  const label = document.createElement("span");
  label.textContent = language || "code";
  const copy = document.createElement("button");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.addEventListener("click", async () => {
    copy.textContent = (await copyText(code.textContent)) ? "Copied" : "Copy failed";
    setTimeout(() => { copy.textContent = "Copy"; }, 1400);
  });
  head.append(label, copy);
  pre.replaceWith(block);
  block.append(head, pre);
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Plain http on a LAN address is not a secure context: no clipboard API.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}
