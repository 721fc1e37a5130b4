/**
 * A small, safe markdown renderer for model output.
 *
 * Model output is untrusted: it may hold HTML, scripts or javascript: links (a prompt
 * injection only needs to ask for them). This renderer never parses HTML: it builds DOM nodes
 * and puts every piece of text in a text node, so "<script>" shows as those characters. Links
 * keep only http(s)://host, mailto, #fragment and same-site /path targets with no whitespace,
 * control character or backslash (browsers read "/\host" as "//host", another site); anything
 * else is shown as text.
 *
 * Supported: paragraphs, headings (#), fenced code blocks (```), bulleted and numbered lists,
 * block quotes, horizontal rules, and inline code, **bold**, *italic* / _italic_, [links](url).
 * An unclosed fence (an answer still streaming) renders as an open code block.
 *
 *   const fragment = Markdown.render(text);  // a DocumentFragment
 */
(function (global) {
  "use strict";

  const SAFE_URL = /^(https?:\/\/[^\/?#]|mailto:|\/(?!\/)|#)/i;
  const UNSAFE_CHAR = /[\s\u0000-\u001f\u007f-\u009f\\]/;

  function el(tag, className) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    return node;
  }

  function text(value) {
    return document.createTextNode(value);
  }

  // Inline markup, left to right; the earliest match wins, text between goes in text nodes.
  const INLINE = [
    {re: /`([^`\n]+)`/, make: (m) => wrap("code", m[1], false)},
    {re: /\*\*([^*\n]+)\*\*/, make: (m) => wrap("strong", m[1], true)},
    {re: /\*([^*\n]+)\*/, make: (m) => wrap("em", m[1], true)},
    {re: /(^|[^\w])_([^_\n]+)_(?!\w)/, make: (m) => wrap("em", m[2], true), lead: 1},
    {re: /\[([^\]\n]+)\]\(([^)\s]+)\)/, make: link},
  ];

  function wrap(tag, content, nested) {
    const node = el(tag);
    if (nested) appendInline(node, content);
    else node.appendChild(text(content));
    return node;
  }

  function link(m) {
    const label = m[1];
    const url = m[2];
    // javascript:, data:, //host, /\host... stay plain text
    if (!SAFE_URL.test(url) || UNSAFE_CHAR.test(url)) return text(m[0]);
    const a = el("a");
    a.href = url;
    a.rel = "noopener noreferrer nofollow";
    a.target = "_blank";
    appendInline(a, label);
    return a;
  }

  function appendInline(parent, source) {
    let rest = source;
    let guard = 0;
    while (rest && guard++ < 10000) {
      let best = null;
      for (const rule of INLINE) {
        const m = rule.re.exec(rest);
        if (!m) continue;
        const lead = rule.lead ? m[rule.lead].length : 0;
        const index = m.index + lead;
        if (best === null || index < best.index) best = {rule: rule, m: m, index: index, lead: lead};
      }
      if (best === null) {
        parent.appendChild(text(rest));
        return;
      }
      if (best.index > 0) parent.appendChild(text(rest.slice(0, best.index)));
      parent.appendChild(best.rule.make(best.m));
      rest = rest.slice(best.m.index + best.m[0].length);
    }
  }

  function paragraph(lines) {
    const p = el("p");
    lines.forEach(function (line, i) {
      if (i) p.appendChild(el("br"));
      appendInline(p, line);
    });
    return p;
  }

  function render(source) {
    const fragment = document.createDocumentFragment();
    const lines = String(source || "").replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    let para = [];
    let list = null;
    let listType = null;

    function flush() {
      if (para.length) fragment.appendChild(paragraph(para));
      para = [];
      list = null;
      listType = null;
    }

    while (i < lines.length) {
      const line = lines[i];
      const fence = /^\s*```\s*([\w+-]*)\s*$/.exec(line);
      if (fence) {
        flush();
        const pre = el("pre");
        const code = el("code", fence[1] ? "language-" + fence[1] : "");
        const body = [];
        i++;
        while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) body.push(lines[i++]);
        i++; // the closing fence (or past the end while streaming)
        code.appendChild(text(body.join("\n")));
        pre.appendChild(code);
        fragment.appendChild(pre);
        continue;
      }
      const heading = /^(#{1,6})\s+(.*)$/.exec(line);
      const bullet = /^\s*[-*+]\s+(.*)$/.exec(line);
      const number = /^\s*\d{1,9}[.)]\s+(.*)$/.exec(line);
      const quote = /^\s*>\s?(.*)$/.exec(line);
      if (heading) {
        flush();
        const h = el("h" + Math.min(6, heading[1].length + 2)); // h3.. inside a chat bubble
        appendInline(h, heading[2]);
        fragment.appendChild(h);
      } else if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
        flush();
        fragment.appendChild(el("hr"));
      } else if (bullet || number) {
        if (para.length) fragment.appendChild(paragraph(para));
        para = [];
        const wanted = bullet ? "ul" : "ol";
        if (list === null || listType !== wanted) {
          list = el(wanted);
          listType = wanted;
          fragment.appendChild(list);
        }
        const item = el("li");
        appendInline(item, (bullet || number)[1]);
        list.appendChild(item);
      } else if (quote) {
        flush();
        const block = el("blockquote");
        const quoted = [quote[1]];
        while (i + 1 < lines.length && /^\s*>/.test(lines[i + 1])) {
          quoted.push(lines[++i].replace(/^\s*>\s?/, ""));
        }
        block.appendChild(paragraph(quoted));
        fragment.appendChild(block);
      } else if (line.trim() === "") {
        flush();
      } else {
        list = null;
        listType = null;
        para.push(line);
      }
      i++;
    }
    flush();
    return fragment;
  }

  global.Markdown = {render: render};
})(window);
