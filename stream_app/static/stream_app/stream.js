/**
 * stream_app/stream.js: a small client for django-stream-llm's server-sent events.
 *
 * Include it with the template tag:  {% load stream_tags %}{% stream_app_script %}
 * It defines window.StreamApp with two functions. Both parse each event's data as JSON when
 * it is JSON (else pass the text), remember the last event id, and report a state through
 * onState: "connecting", "open", "reconnecting", "closed".
 *
 * 1. Follow a stream with EventSource, resuming after a drop:
 *
 *      const stream = StreamApp.connect("/chat/generations/<id>/stream/", {
 *        on: {token(data) {...}, done(data) {...}, error(data) {...}},
 *        lastEventId: null,           // resume after this id (sent as ?lastEventId=)
 *        closeOn: ["done", "error"],  // events after which the stream is complete
 *        onState(state) {...},
 *        onGone() {...},              // the server answered 204: nothing (more) to read
 *      });
 *      stream.close();
 *
 *    The browser reconnects by itself after a network drop and sends Last-Event-ID, so the
 *    server replays what was missed. When EventSource gives up (the server refused, answered
 *    204, or the network is down) the client asks with HEAD whether there is still something
 *    to read and reconnects with exponential backoff and jitter (1 s, 2 s, 4 s... 30 s, and at
 *    once when the browser comes back online), until a closeOn event, close(), or a 204.
 *
 * 2. POST a request that answers with a stream (fetch; EventSource cannot POST), and fall back
 *    to connect() if the connection is cut before the end:
 *
 *      const stream = StreamApp.post("/chat/send/", {
 *        json: {message: "Hi"}, headers: {"X-CSRFToken": token},
 *        on: {...}, onState, onHttpError(status, body) {...},
 *        resumeUrl: (meta) => meta.stream_url,  // meta: data of the first "generation" event
 *      });
 *
 *    Without resumeUrl it resumes at meta.stream_url if that is on this site (the origin of
 *    the page): event data is not trusted to send the page elsewhere.
 *
 * Named events only reach the handlers in `on`; an `error` event from the server is a
 * MessageEvent with data, unlike EventSource's own connection errors, and only the former
 * reaches on.error.
 */
(function (global) {
  "use strict";

  const BACKOFF_MIN = 1000;
  const BACKOFF_MAX = 30000;

  function parse(text) {
    if (typeof text !== "string") return text;
    const first = text.charAt(0);
    if (first === "{" || first === "[" || first === '"') {
      try {
        return JSON.parse(text);
      } catch (e) {
        return text;
      }
    }
    return text;
  }

  /** url if it is on the page's own origin, else null. */
  function sameOrigin(url) {
    try {
      const origin = new URL(url, global.location.href).origin;
      return typeof url === "string" && origin === global.location.origin ? url : null;
    } catch (e) {
      return null;
    }
  }

  function backoff(attempt) {
    const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * Math.pow(2, attempt));
    return base * (0.5 + Math.random() * 0.5);
  }

  /** Follow an SSE URL with EventSource (see the file comment). */
  function connect(url, options) {
    const opts = options || {};
    const handlers = opts.on || {};
    const closeOn = new Set(opts.closeOn || ["done", "error"]);
    let lastEventId = opts.lastEventId || null;
    let source = null;
    let timer = null;
    let attempt = 0;
    let finished = false;
    let state = null;

    function setState(next) {
      if (next === state) return;
      state = next;
      if (opts.onState) opts.onState(next);
    }

    function target() {
      const u = new URL(url, global.location.href);
      if (lastEventId) u.searchParams.set("lastEventId", lastEventId);
      return u.toString();
    }

    function dispatch(name, event) {
      if (event.lastEventId) lastEventId = event.lastEventId;
      const handler = handlers[name];
      if (handler) handler(parse(event.data), event);
      if (closeOn.has(name)) finish();
    }

    function open() {
      if (finished) return;
      setState(attempt ? "reconnecting" : "connecting");
      source = new EventSource(target(), {withCredentials: !!opts.withCredentials});
      source.onopen = function () {
        attempt = 0;
        setState("open");
      };
      const names = new Set(Object.keys(handlers).concat(Array.from(closeOn)));
      names.forEach(function (name) {
        if (name === "error") return;
        source.addEventListener(name, function (event) {
          dispatch(name, event);
        });
      });
      // "error" is both the server's named event (a MessageEvent with data) and
      // EventSource's connection error (a plain Event).
      source.addEventListener("error", function (event) {
        if (finished) return;
        if (typeof event.data === "string") {
          dispatch("error", event);
          return;
        }
        if (source.readyState === EventSource.CONNECTING) {
          setState("reconnecting"); // the browser retries by itself, with Last-Event-ID
          return;
        }
        source.close();
        retryLater();
      });
    }

    function retryLater() {
      if (finished) return;
      setState("reconnecting");
      const delay = backoff(attempt++);
      timer = global.setTimeout(probe, delay);
    }

    async function probe() {
      timer = null;
      if (finished) return;
      let response;
      try {
        response = await fetch(target(), {method: "HEAD", credentials: "same-origin"});
      } catch (e) {
        retryLater(); // still offline
        return;
      }
      if (response.status === 204) {
        finish();
        if (opts.onGone) opts.onGone();
        return;
      }
      if (response.status >= 400 && response.status < 500) {
        finish();
        if (handlers.error) handlers.error({code: "http_" + response.status, message: "The stream is not available."});
        return;
      }
      open();
    }

    function onOnline() {
      if (timer !== null) {
        global.clearTimeout(timer);
        probe();
      }
    }
    global.addEventListener("online", onOnline);

    function finish() {
      if (finished) return;
      finished = true;
      if (source) source.close();
      if (timer !== null) global.clearTimeout(timer);
      global.removeEventListener("online", onOnline);
      setState("closed");
    }

    open();
    return {
      close: finish,
      get lastEventId() {
        return lastEventId;
      },
      get finished() {
        return finished;
      },
    };
  }

  /** An incremental parser of the event-stream format (WHATWG HTML 9.2.5 and 9.2.6). */
  function Parser(onEvent) {
    let buffer = "";
    let data = [];
    let type = "";
    let id = null;
    let pendingCR = false;
    let started = false;

    function line(text) {
      if (text === "") {
        if (data.length) onEvent({type: type || "message", data: data.join("\n"), lastEventId: id});
        data = [];
        type = "";
        return;
      }
      if (text.charAt(0) === ":") return;
      const colon = text.indexOf(":");
      let field = colon === -1 ? text : text.slice(0, colon);
      let value = colon === -1 ? "" : text.slice(colon + 1);
      if (value.charAt(0) === " ") value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
      else if (field === "id" && value.indexOf("\0") === -1) id = value;
    }

    this.feed = function (chunk) {
      if (!started) {
        started = true;
        if (chunk.charAt(0) === "\ufeff") chunk = chunk.slice(1);
      }
      if (pendingCR && chunk.charAt(0) === "\n") chunk = chunk.slice(1);
      pendingCR = false;
      buffer += chunk;
      const re = /\r\n|\r|\n/g;
      let start = 0;
      let match;
      while ((match = re.exec(buffer)) !== null) {
        if (match[0] === "\r" && match.index === buffer.length - 1) {
          pendingCR = true; // maybe the first half of a CRLF split across chunks
        }
        line(buffer.slice(start, match.index));
        start = re.lastIndex;
      }
      buffer = buffer.slice(start);
    };
  }

  /** POST and read the streamed answer; resume with connect() if cut (see the file comment). */
  function post(url, options) {
    const opts = options || {};
    const handlers = opts.on || {};
    const closeOn = new Set(opts.closeOn || ["done", "error"]);
    const controller = new AbortController();
    let lastEventId = null;
    let finished = false;
    let closed = false;
    let meta = null;
    let resumed = null;

    function setState(next) {
      if (opts.onState) opts.onState(next);
    }

    function dispatch(event) {
      if (finished) return;
      if (event.lastEventId) lastEventId = event.lastEventId;
      const value = parse(event.data);
      if (event.type === "generation" && meta === null) meta = value;
      const handler = handlers[event.type];
      if (handler) handler(value, event);
      if (closeOn.has(event.type)) finished = true;
    }

    async function run() {
      setState("connecting");
      let response;
      try {
        response = await fetch(url, {
          method: "POST",
          credentials: "same-origin",
          headers: Object.assign(
            {"Content-Type": "application/json", Accept: "text/event-stream"},
            opts.headers || {}
          ),
          body: opts.body !== undefined ? opts.body : JSON.stringify(opts.json || {}),
          signal: controller.signal,
        });
      } catch (e) {
        if (!closed && opts.onHttpError) opts.onHttpError(0, {error: "network", message: "The server could not be reached."});
        setState("closed");
        return;
      }
      const type = response.headers.get("Content-Type") || "";
      if (!response.ok || type.indexOf("text/event-stream") !== 0) {
        let body = null;
        try {
          body = await response.json();
        } catch (e) {
          body = null;
        }
        if (opts.onHttpError) opts.onHttpError(response.status, body);
        setState("closed");
        return;
      }
      setState("open");
      const parser = new Parser(dispatch);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      try {
        for (;;) {
          const part = await reader.read();
          if (part.done) break;
          parser.feed(decoder.decode(part.value, {stream: true}));
          if (finished) break;
        }
      } catch (e) {
        // The connection was cut: resume below.
      }
      if (finished || closed) {
        try {
          controller.abort();
        } catch (e) {
          /* already done */
        }
        setState("closed");
        return;
      }
      const resumeUrl = opts.resumeUrl
        ? opts.resumeUrl(meta || {})
        : sameOrigin(meta && meta.stream_url);
      if (!resumeUrl) {
        setState("closed");
        if (opts.onInterrupted) opts.onInterrupted();
        return;
      }
      resumed = connect(resumeUrl, {
        on: handlers,
        closeOn: Array.from(closeOn),
        lastEventId: lastEventId,
        onState: opts.onState,
        onGone: opts.onGone,
      });
    }

    run();
    return {
      close: function () {
        closed = true;
        controller.abort();
        if (resumed) resumed.close();
      },
      get lastEventId() {
        return resumed ? resumed.lastEventId : lastEventId;
      },
    };
  }

  global.StreamApp = {connect: connect, post: post, Parser: Parser, version: "1"};
})(window);
