/* stream_app notifications: toasts and a notification list with an unread count.
 *
 * Markup comes from {% notifications_ui %} ([data-stream-notifications]). Each notification is
 * the SSE event "notification" whose data has a stable "id" (the same for the live broadcast,
 * the Last-Event-ID replay and delivery on connect) and "sent_at": a copy with the same id and
 * sent_at is dropped, a newer sent_at is a resend and shows again.
 *
 * window.streamNotifications is the first UI on the page; use attach(eventSource) to feed it
 * from an EventSource the page already has (render the tag with connect=False).
 *
 * Every field of an event is untrusted: anyone who may publish can send any payload. Nothing
 * here parses HTML: titles and text are text nodes, the body is built from "body_nodes"
 * (stream_app.notifications.markup: strings and {tag, children, href}) with createElement and
 * only the tags in TAGS, and a link becomes an href only if safeLink() accepts it (the same
 * rule as markup.is_safe_link). An "html" field, if a publisher sends one, is ignored. The
 * "stream:notification" DOM event carries the payload as received: untrusted as well.
 */
(function () {
  "use strict";

  var TOASTED_KEY = "stream_app.notifications.toasted";
  var READ_KEY = "stream_app.notifications.read";
  var TOAST_MS = 8000;
  var MAX_REMEMBERED = 200;
  var LEVELS = new Set(["info", "success", "warning", "error"]);
  var TAGS = new Set(["p", "br", "ul", "li", "strong", "em", "code", "a"]);
  var MAX_DEPTH = 16;
  // http(s)://host or /path; no whitespace, control character or backslash anywhere (so no
  // javascript:, data:, //host, /\host, or a scheme behind a tab the URL parser would drop).
  var UNSAFE_CHAR = /[\s\u0000-\u001f\u007f-\u009f\\]/;
  var SAFE_START = /^(https?:\/\/[^\/?#]|\/(?!\/))/i;

  function safeLink(value) {
    return typeof value === "string" && value.length > 0 && value.length <= 2000 &&
      !UNSAFE_CHAR.test(value) && SAFE_START.test(value);
  }

  function text(value) {
    return typeof value === "string" ? value : value == null ? "" : String(value);
  }

  // Build a body from its nodes: strings become text nodes, known tags elements, links only
  // with a safe href; an unknown tag or an unsafe link keeps just its text.
  function appendNodes(parent, nodes, depth) {
    if (!Array.isArray(nodes) || depth > MAX_DEPTH) return;
    nodes.forEach(function (node) {
      if (typeof node === "string") {
        parent.appendChild(document.createTextNode(node));
        return;
      }
      if (!node || typeof node !== "object") return;
      var tag = typeof node.tag === "string" ? node.tag : "";
      if (!TAGS.has(tag) || (tag === "a" && !safeLink(node.href))) {
        appendNodes(parent, node.children, depth + 1);
        return;
      }
      var el = document.createElement(tag);
      if (tag === "a") {
        el.href = node.href;
        el.rel = "noopener noreferrer";
      }
      appendNodes(el, node.children, depth + 1);
      parent.appendChild(el);
    });
  }

  // A body without nodes (an older producer): its plain text, as markup.body_nodes does.
  function plainNodes(body) {
    return text(body).replace(/\r\n?/g, "\n").trim().split(/\n\s*\n/)
      .filter(function (p) { return p; })
      .map(function (p) {
        var children = [];
        p.split("\n").forEach(function (line, i) {
          if (i) children.push({ tag: "br" });
          children.push(line);
        });
        return { tag: "p", children: children };
      });
  }

  function remembered(key) {
    try {
      return JSON.parse(window.localStorage.getItem(key) || "[]");
    } catch (e) {
      return [];
    }
  }

  function remember(key, value) {
    var values = remembered(key).filter(function (v) { return v !== value; });
    values.push(value);
    try {
      window.localStorage.setItem(key, JSON.stringify(values.slice(-MAX_REMEMBERED)));
    } catch (e) { /* storage full or disabled: only this page remembers */ }
  }

  function StreamNotifications(root) {
    this.root = root;
    this.items = new Map();
    this.authenticated = root.dataset.authenticated === "true";
    this.bell = root.querySelector(".sn-bell");
    this.badge = root.querySelector(".sn-badge");
    this.panel = root.querySelector(".sn-panel");
    this.list = root.querySelector(".sn-list");
    this.empty = root.querySelector(".sn-empty");
    this.toasts = root.querySelector(".sn-toasts");
    var self = this;
    this.bell.addEventListener("click", function () { self.toggle(); });
    root.querySelector(".sn-read-all").addEventListener("click", function () {
      self.markRead(Array.from(self.items.keys()));
    });
  }

  StreamNotifications.prototype.channels = function () {
    return (this.root.dataset.channels || "").split(/\s+/).filter(Boolean);
  };

  StreamNotifications.prototype.connect = function () {
    var query = this.channels().map(function (c) {
      return "channel=" + encodeURIComponent(c);
    }).join("&");
    var url = this.root.dataset.streamUrl;
    this.attach(new EventSource(url + (url.indexOf("?") < 0 ? "?" : "&") + query));
  };

  StreamNotifications.prototype.attach = function (source) {
    var self = this;
    this.source = source;
    source.addEventListener("notification", function (event) {
      try {
        self.receive(JSON.parse(event.data));
      } catch (e) {
        console.error("stream_app: bad notification event", e);
      }
    });
    source.addEventListener("ready", function () { self.root.dataset.state = "open"; });
    source.addEventListener("error", function () {
      // EventSource reconnects by itself (with Last-Event-ID) unless the server said 204.
      self.root.dataset.state = source.readyState === 2 ? "closed" : "reconnecting";
    });
  };

  StreamNotifications.prototype.receive = function (n) {
    if (n.expires_at && Date.parse(n.expires_at) <= Date.now()) return;
    var known = this.items.get(n.id);
    if (known && known.sent_at >= n.sent_at) return;
    var key = n.id + "@" + n.sent_at;
    // Anonymous users keep read state in this browser; users on the server.
    n.read = !this.authenticated && remembered(READ_KEY).indexOf(key) >= 0;
    n.key = key;
    this.items.set(n.id, n);
    this.render();
    if (!n.read && remembered(TOASTED_KEY).indexOf(key) < 0) {
      remember(TOASTED_KEY, key);
      this.toast(n);
    }
    this.root.dispatchEvent(new CustomEvent("stream:notification", { detail: n }));
  };

  StreamNotifications.prototype.unread = function () {
    var count = 0;
    this.items.forEach(function (n) { if (!n.read) count += 1; });
    return count;
  };

  StreamNotifications.prototype.entry = function (n, tag) {
    var el = document.createElement(tag);
    var level = LEVELS.has(n.level) ? n.level : "info";
    el.className = "sn-item sn-level-" + level + (n.read ? " sn-read" : "");
    el.dataset.id = text(n.id);
    var title = document.createElement("strong");
    title.className = "sn-title";
    title.textContent = text(n.title);
    el.appendChild(title);
    var body = document.createElement("div");
    body.className = "sn-body";
    appendNodes(body, Array.isArray(n.body_nodes) ? n.body_nodes : plainNodes(n.body), 0);
    if (body.hasChildNodes()) el.appendChild(body);
    if (safeLink(n.link)) {
      var link = document.createElement("a");
      link.className = "sn-link";
      link.href = n.link;
      link.textContent = "Open";
      el.appendChild(link);
    }
    return el;
  };

  StreamNotifications.prototype.render = function () {
    var self = this;
    var items = Array.from(this.items.values()).sort(function (a, b) {
      return a.sent_at < b.sent_at ? 1 : a.sent_at > b.sent_at ? -1 : b.id - a.id;
    });
    this.list.textContent = "";
    items.forEach(function (n) {
      var li = self.entry(n, "li");
      if (!n.read) {
        var button = document.createElement("button");
        button.type = "button";
        button.className = "sn-mark-read";
        button.textContent = "Mark read";
        button.addEventListener("click", function () { self.markRead([n.id]); });
        li.appendChild(button);
      }
      self.list.appendChild(li);
    });
    this.empty.hidden = items.length > 0;
    var unread = this.unread();
    this.badge.textContent = String(unread);
    this.badge.hidden = unread === 0;
    this.root.dataset.unread = String(unread);
  };

  StreamNotifications.prototype.toast = function (n) {
    var self = this;
    var el = this.entry(n, "div");
    el.classList.add("sn-toast");
    el.setAttribute("role", "alert");
    var close = document.createElement("button");
    close.type = "button";
    close.className = "sn-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    close.addEventListener("click", function () { el.remove(); });
    el.appendChild(close);
    this.toasts.appendChild(el);
    window.setTimeout(function () { el.remove(); }, TOAST_MS);
    el.addEventListener("click", function (event) {
      if (event.target === close || event.target.tagName === "A") return;
      self.markRead([n.id]);
      el.remove();
    });
  };

  StreamNotifications.prototype.toggle = function () {
    this.panel.hidden = !this.panel.hidden;
    this.bell.setAttribute("aria-expanded", String(!this.panel.hidden));
  };

  StreamNotifications.prototype.markRead = function (ids) {
    var self = this;
    var fresh = ids.filter(function (id) {
      var n = self.items.get(id);
      return n && !n.read;
    });
    if (!fresh.length) return Promise.resolve([]);
    fresh.forEach(function (id) {
      var n = self.items.get(id);
      n.read = true;
      if (!self.authenticated) remember(READ_KEY, n.key);
      self.toasts.querySelectorAll(".sn-toast").forEach(function (toast) {
        if (toast.dataset.id === String(id)) toast.remove();
      });
    });
    this.render();
    var url = this.root.dataset.readUrl;
    if (!this.authenticated || !url) return Promise.resolve(fresh);
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": this.root.dataset.csrf },
      body: JSON.stringify({ ids: fresh }),
    }).then(function (response) {
      if (!response.ok) throw new Error("mark read failed: " + response.status);
      return fresh;
    });
  };

  function start() {
    document.querySelectorAll("[data-stream-notifications]").forEach(function (root) {
      if (root.streamNotifications) return;
      var ui = new StreamNotifications(root);
      root.streamNotifications = ui;
      if (!window.streamNotifications) window.streamNotifications = ui;
      if (root.dataset.connect !== "false") ui.connect();
    });
  }

  window.StreamNotifications = StreamNotifications;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
