/* stream_app notifications: toasts and a notification list with an unread count.
 *
 * Markup comes from {% notifications_ui %} ([data-stream-notifications]). Each notification is
 * the SSE event "notification" whose data has a stable "id" (the same for the live broadcast,
 * the Last-Event-ID replay and delivery on connect) and "sent_at": a copy with the same id and
 * sent_at is dropped, a newer sent_at is a resend and shows again.
 *
 * window.streamNotifications is the first UI on the page; use attach(eventSource) to feed it
 * from an EventSource the page already has (render the tag with connect=False).
 */
(function () {
  "use strict";

  var TOASTED_KEY = "stream_app.notifications.toasted";
  var READ_KEY = "stream_app.notifications.read";
  var TOAST_MS = 8000;
  var MAX_REMEMBERED = 200;

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
    el.className = "sn-item sn-level-" + n.level + (n.read ? " sn-read" : "");
    el.dataset.id = n.id;
    var title = document.createElement("strong");
    title.className = "sn-title";
    title.textContent = n.title;
    el.appendChild(title);
    if (n.html) {
      var body = document.createElement("div");
      body.className = "sn-body";
      // Server-rendered: escaped first, then a fixed set of tags (stream_app.notifications.markup).
      body.innerHTML = n.html;
      el.appendChild(body);
    }
    if (n.link) {
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
