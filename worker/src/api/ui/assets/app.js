// Highway console: shows times in the viewer's zone (UTC stays in the title), swaps in
// live fragments streamed by /ui/live/..., and follows an activity's log stream.
// Pages work without this script; it only makes them live.
(function () {
  "use strict";

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d.getTime())) {
        t.textContent = d.toLocaleString();
      }
    });
  }

  function live(el) {
    var src = el.getAttribute("data-live");
    if (!src || !window.EventSource) return;
    var es = new EventSource(src);
    es.addEventListener("fragment", function (e) {
      el.innerHTML = e.data;
      localTimes(el);
      el.setAttribute("data-updated", String(Date.now()));
    });
    es.addEventListener("end", function () {
      es.close();
    });
  }

  function follow(pre) {
    if (pre.getAttribute("data-done") === "true" || !window.EventSource) return;
    var after = pre.getAttribute("data-after") || "-1";
    var es = new EventSource(pre.getAttribute("data-follow") + "?after=" + encodeURIComponent(after));
    var status = document.getElementById("log-status");
    es.addEventListener("log", function (e) {
      var row;
      try { row = JSON.parse(e.data); } catch (_) { return; }
      var stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      var span = document.createElement("span");
      span.className = "line " + String(row.stream).replace(/[^a-z0-9_-]/gi, "");
      span.textContent = "[" + row.stream + "] " + row.line + "\n";
      pre.appendChild(span);
      pre.setAttribute("data-after", String(row.seq));
      if (stick) pre.scrollTop = pre.scrollHeight;
    });
    es.addEventListener("end", function (e) {
      es.close();
      pre.setAttribute("data-done", "true");
      if (status) {
        var s = "";
        try { s = JSON.parse(e.data).status || ""; } catch (_) {}
        status.textContent = "The stream ended" + (s ? ": the activity is " + s + "." : ".");
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    document.querySelectorAll("[data-live]").forEach(live);
    var pre = document.getElementById("log");
    if (pre) follow(pre);
    document.documentElement.setAttribute("data-js", "ready");
  });
})();
