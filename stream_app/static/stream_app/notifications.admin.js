/* Admin change form of a notification: the live count of connected sessions its audience
 * matches, across workers. Polls the admin's audience-count view with the form's current
 * channel and audience (saved or not) every few seconds and whenever they change. */
(function () {
  "use strict";
  var POLL_MS = 3000;

  function value(form, name) {
    var field = form.elements[name];
    return field ? field.value : "";
  }

  function selected(form, name) {
    var field = form.elements[name];
    if (!field || !field.options) return [];
    return Array.from(field.options).filter(function (o) { return o.selected; })
      .map(function (o) { return o.value; });
  }

  function start() {
    var box = document.getElementById("sn-audience-count");
    if (!box) return;
    var form = box.closest("form");
    var output = box.querySelector("output");
    var timer = null;
    var pending = false;

    function refresh() {
      if (pending || document.hidden) return;
      var params = new URLSearchParams();
      params.set("channel", value(form, "channel"));
      params.set("audience", value(form, "audience"));
      params.set("state_filter", value(form, "state_filter"));
      selected(form, "users").forEach(function (v) { params.append("users", v); });
      selected(form, "groups").forEach(function (v) { params.append("groups", v); });
      pending = true;
      fetch(box.dataset.url + "?" + params.toString(), { credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (data) {
          box.classList.toggle("sn-count-error", "error" in data);
          output.textContent = "error" in data ? data.message : String(data.count);
          box.dataset.count = "error" in data ? "" : String(data.count);
        })
        .catch(function () { output.textContent = "unavailable"; })
        .finally(function () { pending = false; });
    }

    // Show only the field the chosen audience uses.
    var audienceFields = { users: "users", groups: "groups", filter: "state_filter" };
    function showAudienceFields() {
      var audience = value(form, "audience");
      Object.keys(audienceFields).forEach(function (key) {
        var row = form.querySelector(".form-row.field-" + audienceFields[key]);
        if (row) row.style.display = audience === key ? "" : "none";
      });
    }
    form.addEventListener("change", showAudienceFields);
    showAudienceFields();
    form.addEventListener("change", refresh);
    form.addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, 400);
    });
    window.setInterval(refresh, POLL_MS);
    refresh();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
