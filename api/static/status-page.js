// The status page's live updates (api/live.py): each status change and incident of the
// page's monitors arrives by Server-Sent Events and is written into the page without a
// reload. EventSource reconnects by itself after a dropped connection.
"use strict";
(function () {
  const url = document.body.dataset.events;
  if (!url || !window.EventSource) return;
  const labels = { up: "Operational", down: "Down", degraded: "Degraded", unknown: "Unknown",
                   flapping: "Flapping" };
  const monitor = (id) => document.querySelector(`[data-monitor="${CSS.escape(id)}"]`);
  const nameOf = (id) => {
    const node = monitor(id);
    return node ? node.querySelector(".name").textContent : id;
  };
  const summary = () => {
    const states = [...document.querySelectorAll("[data-monitor]")].map((m) => m.dataset.status);
    const node = document.getElementById("summary");
    if (!node) return;
    let text = "Status not known for every system yet", shade = "none";
    if (states.includes("down")) { text = "Some systems are down"; shade = "down"; }
    else if (states.some((s) => s === "degraded" || s === "flapping")) {
      text = "Some systems are degraded"; shade = "degraded";
    } else if (states.length && states.every((s) => s === "up")) {
      text = "All systems operational"; shade = "up";
    }
    node.className = `summary s-${shade}`;
    node.textContent = text;
  };
  const when = (ms) => new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC";
  const source = new EventSource(url);
  // Changes made while the stream was down (a dropped slow client, an API restart) are not
  // sent again: after a lost connection the page is loaded afresh once the stream is back.
  let lost = false;
  source.addEventListener("error", () => { lost = true; });
  source.addEventListener("open", () => { if (lost) window.location.reload(); });
  source.addEventListener("status", (message) => {
    const change = JSON.parse(message.data);
    const node = monitor(change.monitor_id);
    if (!node) return;
    node.dataset.status = change.status;
    const state = node.querySelector(".state");
    state.className = `state s-${change.status}`;
    state.textContent = labels[change.status] || change.status;
    state.title = `since ${when(change.since_ms)}`;
    if (change.status === "up") node.querySelectorAll(".failure").forEach((f) => f.remove());
    summary();
  });
  source.addEventListener("incident", (message) => {
    const incident = JSON.parse(message.data);
    const list = document.getElementById("open-incidents");
    const banner = document.getElementById("banner");
    if (!list || !banner) return;
    const selector = `[data-incident="${CSS.escape(incident.incident_id)}"]`;
    list.querySelectorAll(selector).forEach((item) => item.remove());
    if (incident.state === "opened") {
      const item = document.createElement("li");
      item.dataset.incident = incident.incident_id;
      const name = document.createElement("strong");
      name.textContent = nameOf(incident.monitor_id);
      item.append(name, ` is having problems since ${when(incident.opened_ms)}`);
      list.append(item);
    }
    banner.hidden = list.children.length === 0;
  });
})();
