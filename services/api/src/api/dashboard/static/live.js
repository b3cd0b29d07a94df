// The live board (/live): the organization's calls in progress, from GET /api/live (Server-
// Sent Events; api/live.py says what the stream sends). No framework: one table, one row a
// call, kept by call id.
//
// - `clock`: the server's time and how long an ended call stays. Durations tick and ended
//   calls leave by the server's clock (offset from this browser's), whatever this one says.
// - `snapshot`: the whole board (on a first connect, or a reconnect that cannot resume).
// - `calls`: changed calls. A row never goes back: a status ranked below the one shown is
//   an older read of the call, and is ignored.
// EventSource reconnects on its own, sending the last event id: the server resumes or
// sends a snapshot.
"use strict";

(function () {
  const table = document.getElementById("live-board");
  if (!table) return;
  const body = table.tBodies[0];
  const empty = document.getElementById("live-empty");
  const state = document.getElementById("live-state");
  const RANK = { scheduled: 1, queued: 2, ringing: 3, "in-progress": 4, forwarding: 5, ended: 6 };
  const LABEL = {
    inboundPhoneCall: "Inbound", outboundPhoneCall: "Outbound", webCall: "Web",
    "in-progress": "In progress", noAnswer: "No answer",
  };
  const calls = new Map(); // call id -> {call, row, leaveAt}
  let offset = 0; // server time minus this browser's, in ms
  let linger = Number(table.dataset.linger) * 1000;

  const serverNow = () => Date.now() + offset;
  const words = (value) => {
    if (value === null || value === undefined || value === "") return "—";
    if (LABEL[value]) return LABEL[value];
    const spaced = String(value).replace(/([a-z])([A-Z])/g, "$1 $2").replace(/-/g, " ");
    return spaced.charAt(0).toUpperCase() + spaced.slice(1).toLowerCase();
  };
  const clock = (ms) => {
    const total = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
  };

  function cell(row, label, cls) {
    const td = row.insertCell();
    td.dataset.label = label;
    if (cls) td.className = cls;
    return td;
  }

  function outcome(call) {
    if (call.status !== "ended") return null;
    const span = document.createElement("span");
    const good = call.success === true || (call.success === null && call.outcome === "completed");
    span.className = "pill " + (good ? "succeeded" : call.success === false || call.outcome === "failed" ? "failed" : "ended");
    let text = words(call.outcome || "ended");
    if (call.success === true) text += " · success";
    if (call.success === false) text += " · not a success";
    span.textContent = text;
    span.title = call.endedReason || "";
    return span;
  }

  function draw(entry) {
    const { call } = entry;
    let row = entry.row;
    if (!row) {
      row = entry.row = document.createElement("tr");
      row.dataset.callId = call.id;
      body.insertBefore(row, body.firstChild);
      ["Direction", "Caller", "Assistant", "Status", "Outcome", "Duration"].forEach((label, i) =>
        cell(row, label, i === 5 ? "num duration" : ""));
    }
    row.dataset.status = call.status || "";
    const [direction, caller, assistant, status, ended] = row.cells;
    direction.textContent = words(call.direction);
    caller.textContent = call.caller || "Unknown caller";
    if (call.caller && call.number && call.caller !== call.number) caller.title = call.number;
    assistant.textContent = call.assistant || "—";
    status.replaceChildren();
    const pill = document.createElement("span");
    pill.className = "pill " + (call.status || "unknown");
    pill.textContent = words(call.status);
    status.append(pill);
    ended.replaceChildren();
    const verdict = outcome(call);
    if (verdict) ended.append(verdict);
    tick(entry);
  }

  function tick(entry) {
    const { call, row } = entry;
    const from = call.startedAt || call.createdAt;
    let text = "—";
    if (from && call.status === "ended" && call.endedAt) text = clock(call.endedAt - from);
    else if (from && call.status !== "ended") text = clock(serverNow() - from);
    row.cells[5].textContent = text;
  }

  function put(call) {
    let entry = calls.get(call.id);
    if (entry && (RANK[call.status] || 0) < (RANK[entry.call.status] || 0)) return;
    if (!entry) {
      entry = { call, row: null, leaveAt: null };
      calls.set(call.id, entry);
    }
    entry.call = call;
    if (call.status === "ended" && entry.leaveAt === null) {
      entry.leaveAt = (call.endedAt || serverNow()) + linger;
    }
    draw(entry);
  }

  function sweep() {
    const now = serverNow();
    for (const [id, entry] of calls) {
      if (entry.leaveAt !== null && now >= entry.leaveAt) {
        entry.row.remove();
        calls.delete(id);
      } else {
        tick(entry);
      }
    }
    empty.hidden = calls.size > 0;
    table.hidden = calls.size === 0;
  }

  function show(what, text) {
    state.dataset.state = what;
    state.textContent = text;
  }

  const source = new EventSource("/api/live");
  source.addEventListener("open", () => show("live", "Live"));
  source.addEventListener("error", () => show("reconnecting", "Reconnecting…"));
  source.addEventListener("clock", (event) => {
    const data = JSON.parse(event.data);
    offset = data.now - Date.now();
    linger = data.lingerSeconds * 1000;
  });
  source.addEventListener("snapshot", (event) => {
    const fresh = JSON.parse(event.data).calls;
    for (const entry of calls.values()) entry.row.remove();
    calls.clear();
    // Oldest first, so the newest ends on top.
    fresh.slice().reverse().forEach(put);
    sweep();
  });
  source.addEventListener("calls", (event) => {
    JSON.parse(event.data).calls.forEach(put);
    sweep();
  });
  sweep();
  setInterval(sweep, 1000);
})();
