/**
 * The demo chat page: history, streaming answers, stop, resume after reload, connection state.
 *
 * Sending POSTs the question and reads the streamed answer (StreamApp.post). If the page is
 * reloaded mid-answer, the server renders the answer as "streaming" with its stream URL and
 * StreamApp.connect replays it from the start and follows it live; if the network drops
 * mid-answer, the client resumes from the last event id. Model text is rendered by
 * Markdown.render, which only ever creates text nodes: model output never becomes HTML.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("chat-config").textContent);
  const history = JSON.parse(document.getElementById("history").textContent);
  const list = document.getElementById("messages");
  const form = document.getElementById("composer");
  const input = document.getElementById("input");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("stop");
  const stateLabel = document.getElementById("state");
  const counter = document.getElementById("counter");

  let active = null; // {view, stream, cancelUrl, text}

  // -- connection state ---------------------------------------------------------------------

  const STATES = {
    idle: "Idle",
    connecting: "Connecting…",
    open: "Streaming",
    reconnecting: "Reconnecting…",
    closed: "Idle",
    offline: "Offline",
  };

  function setState(state) {
    if (!navigator.onLine) state = "offline";
    stateLabel.dataset.state = state;
    stateLabel.textContent = STATES[state] || state;
  }
  window.addEventListener("offline", () => setState("offline"));
  window.addEventListener("online", () => setState(active ? "reconnecting" : "idle"));

  // -- rendering ----------------------------------------------------------------------------

  function messageView(role) {
    const article = document.createElement("article");
    article.className = "message " + role;
    const who = document.createElement("h2");
    who.className = "visually-hidden";
    who.textContent = role === "user" ? "You said" : "Assistant";
    const body = document.createElement("div");
    body.className = "body";
    const meta = document.createElement("p");
    meta.className = "meta";
    article.append(who, body, meta);
    list.appendChild(article);
    return {article: article, body: body, meta: meta};
  }

  function renderText(view, role, content) {
    view.body.replaceChildren();
    if (role === "user") {
      const p = document.createElement("p");
      p.textContent = content; // the user's own text: plain, never markdown
      view.body.appendChild(p);
    } else {
      view.body.appendChild(Markdown.render(content));
    }
  }

  function showStats(view, stats) {
    const parts = [];
    if (stats.ttft_ms != null) parts.push("TTFT " + Math.round(stats.ttft_ms) + " ms");
    if (stats.tokens_per_second != null) parts.push(stats.tokens_per_second.toFixed(1) + " tok/s");
    if (stats.tokens) parts.push(stats.tokens + (stats.tokens === 1 ? " token" : " tokens"));
    if (stats.finish_reason === "cancelled") parts.push("stopped");
    else if (stats.finish_reason === "length") parts.push("cut at the length limit");
    view.meta.textContent = parts.join(" · ");
  }

  function showError(view, message, code) {
    view.article.classList.add("error");
    const p = document.createElement("p");
    p.className = "error-text";
    p.setAttribute("role", "alert");
    p.textContent = "⚠ " + (message || "The answer failed.") + (code ? " (" + code + ")" : "");
    view.body.appendChild(p);
  }

  function scrollDown() {
    const nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 200;
    if (nearBottom) window.scrollTo(0, document.body.scrollHeight);
  }

  // -- an answer being streamed ---------------------------------------------------------------

  function startAnswer(view) {
    const answer = {view: view, text: "", cancelUrl: null, stream: null, frame: 0, first: null};
    view.article.classList.add("streaming");
    view.article.setAttribute("aria-busy", "true");
    active = answer;
    sendButton.disabled = true;
    stopButton.hidden = false;
    stopButton.disabled = false;
    return answer;
  }

  function paint(answer) {
    if (answer.frame) return;
    answer.frame = requestAnimationFrame(function () {
      answer.frame = 0;
      renderText(answer.view, "assistant", answer.text);
      scrollDown();
    });
  }

  function endAnswer(answer) {
    if (answer.frame) cancelAnimationFrame(answer.frame);
    answer.frame = 0;
    renderText(answer.view, "assistant", answer.text);
    answer.view.article.classList.remove("streaming");
    answer.view.article.removeAttribute("aria-busy");
    if (active === answer) active = null;
    sendButton.disabled = false;
    stopButton.hidden = true;
    setState("idle");
    input.focus();
  }

  // Whoever may publish on a generation's channel can send "generation" events too: cancel
  // (a request carrying the CSRF token) on this site only (StreamApp.post resumes likewise).
  function sameOrigin(url) {
    try {
      return typeof url === "string" && new URL(url, location.href).origin === location.origin;
    } catch (e) {
      return false;
    }
  }

  function handlers(answer) {
    return {
      generation(meta) {
        if (meta && sameOrigin(meta.cancel_url)) answer.cancelUrl = meta.cancel_url;
        answer.view.article.dataset.generation = meta.id;
      },
      token(data) {
        if (answer.first === null) answer.first = performance.now();
        answer.text += data.text;
        paint(answer);
      },
      done(data) {
        endAnswer(answer);
        showStats(answer.view, data);
      },
      error(data) {
        endAnswer(answer);
        showError(answer.view, data && data.message, data && data.code);
      },
      reset() {
        /* history was trimmed: the replay continues with what is left */
      },
    };
  }

  function follow(view, streamUrl, cancelUrl) {
    const answer = startAnswer(view);
    answer.cancelUrl = cancelUrl;
    answer.stream = StreamApp.connect(streamUrl, {
      on: handlers(answer),
      onState: setState,
      onGone() {
        endAnswer(answer);
        if (!answer.text) showError(view, "This answer is no longer available.", "gone");
      },
    });
  }

  async function send(text) {
    const userView = messageView("user");
    renderText(userView, "user", text);
    const view = messageView("assistant");
    const answer = startAnswer(view);
    window.scrollTo(0, document.body.scrollHeight);
    answer.stream = StreamApp.post(config.send_url, {
      json: {message: text},
      headers: {"X-CSRFToken": config.csrf_token},
      on: handlers(answer),
      onState: setState,
      onHttpError(status, body) {
        endAnswer(answer);
        const message = (body && body.message) || "The server answered " + status + ".";
        showError(view, message, body && body.error);
        if (status === 400 || status === 409) input.value = text;
      },
      onInterrupted() {
        endAnswer(answer);
        showError(view, "The connection was lost.", "network");
      },
      onGone() {
        endAnswer(answer);
      },
    });
  }

  async function stop() {
    const answer = active;
    if (!answer || !answer.cancelUrl) return;
    stopButton.disabled = true;
    try {
      await fetch(answer.cancelUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: {"X-CSRFToken": config.csrf_token, Accept: "application/json"},
      });
    } catch (e) {
      stopButton.disabled = false; // offline: let the user try again
    }
    // The stream ends by itself with a "done" event (finish reason "cancelled").
  }

  // -- wiring ---------------------------------------------------------------------------------

  function updateCounter() {
    const length = input.value.trim().length;
    counter.textContent = length > config.max_length * 0.8 ? length + " / " + config.max_length : "";
    counter.classList.toggle("over", length > config.max_length);
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 240) + "px";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || active) return;
    input.value = "";
    updateCounter();
    send(text);
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener("input", updateCounter);
  stopButton.addEventListener("click", stop);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && active) {
      event.preventDefault();
      stop();
    }
  });

  // -- the saved conversation -----------------------------------------------------------------

  for (const message of history) {
    const view = messageView(message.role);
    if (message.status === "streaming" && message.stream_url) {
      // Reloaded mid-answer: replay the generation from its start, then follow it live.
      follow(view, message.stream_url, message.stream_url.replace(/stream\/$/, "cancel/"));
      continue;
    }
    renderText(view, message.role, message.content);
    if (message.role === "assistant") {
      showStats(view, message);
      if (message.status === "error") showError(view, message.error_message, message.error_code);
    }
  }
  if (!active) setState("idle");
  window.scrollTo(0, document.body.scrollHeight);
  input.focus();
})();
