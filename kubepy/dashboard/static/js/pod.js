// One pod: its containers and conditions, its events as they come, and its log as it is written.

import { ListWatch, WatchSet, collection, followLog, objectPath } from "./api.js";
import { remove } from "./actions.js";
import { AGE_REFRESH_MS, age, errorBox, h, pill, replace, row, table, throttled } from "./dom.js";
import { podStatus, readyCount, restarts, statusKind } from "./pods.js";

const MAX_LOG_CHARS = 500000;   // a long-running follow keeps its tail only

export function render(root, ctx) {
  const [ns, name] = ctx.args;
  const head = h("div");
  const errors = h("div");
  const conds = h("div");
  const containers = h("div");
  const eventsBox = h("div", { id: "pod-events" });
  const picker = h("select", { id: "log-container" });
  const logBox = h("pre", { id: "log", class: "log" });
  const logState = h("span", { id: "log-state", class: "muted" });
  replace(root, head, errors, h("div", { class: "columns" },
    h("section", {}, h("h3", {}, "Conditions"), conds, h("h3", {}, "Containers"), containers),
    h("section", {}, h("h3", {}, "Events"), eventsBox)),
  h("h3", {}, "Log ", picker, " ", logState), logBox);

  let logAbort = null;
  let following = "";
  function follow(container) {
    if (logAbort) logAbort.abort();
    following = container;
    logAbort = new AbortController();
    logBox.textContent = "";
    logState.textContent = "following…";
    followLog(objectPath("v1", "pods", ns, name, "log"), { container, tailLines: "1000" }, {
      signal: logAbort.signal,
      onText: (text) => {
        const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
        logBox.textContent = (logBox.textContent + text).slice(-MAX_LOG_CHARS);
        if (atBottom) logBox.scrollTop = logBox.scrollHeight;
      },
    }).then(() => { logState.textContent = "the log stream ended (the container stopped)"; })
      .catch((e) => {
        if (e.name === "AbortError") return;
        logState.textContent = `log unavailable: ${e.status || ""} ${e.message}`;
        // A container not started yet is a 400: ask again while this view is open.
        if (e.status === 400) retry = setTimeout(() => { if (following === container) follow(container); }, 2000);
      });
  }
  let retry = null;
  picker.addEventListener("change", () => follow(picker.value));

  const pod = new ListWatch(collection("v1", "pods", ns), {
    query: { fieldSelector: `metadata.name=${name}` }, onChange: () => draw(), onError: () => draw() });
  const events = new ListWatch(collection("v1", "events", ns), {
    query: { fieldSelector: `involvedObject.kind=Pod,involvedObject.name=${name}` },
    onChange: () => draw(), onError: () => draw() });

  const draw = throttled(() => {
    replace(errors, errorBox(pod.error), errorBox(events.error));
    const p = pod.list()[0];
    if (!p) {
      replace(head, h("h2", {}, `Pod ${ns}/${name}`), h("p", { class: "muted" }, pod.synced ? "not found (deleted?)" : "loading…"));
      return;
    }
    const status = podStatus(p);
    replace(head, h("h2", {}, `Pod ${ns}/${name} `, pill(status, statusKind(status))),
      h("p", {}, `node ${p.spec.nodeName || "-"} · IP ${p.status?.podIP || "-"} · ready ${readyCount(p)} · restarts ${restarts(p)} · `,
        `age ${age(p.metadata.creationTimestamp)} `,
        h("button", { type: "button", class: "danger", onclick: () => remove("v1", "pods", ns, name) }, "Delete")));
    replace(conds, table(["Type", "Status", "Since", "Reason"], (p.status?.conditions || []).map((c) =>
      row(c.type, [c.type, pill(c.status, c.status === "True" ? "ok" : "warn"), age(c.lastTransitionTime), c.reason || ""]))));
    const statuses = new Map((p.status?.containerStatuses || []).map((c) => [c.name, c]));
    replace(containers, table(["Name", "Image", "State", "Ready", "Restarts"], (p.spec.containers || []).map((c) => {
      const st = statuses.get(c.name) || {};
      const state = Object.keys(st.state || {})[0] || "waiting";
      const detail = st.state?.[state]?.reason || (state === "running" ? `since ${age(st.state.running.startedAt)}` : "");
      return row(c.name, [c.name, c.image, `${state} ${detail}`, st.ready ? "yes" : "no", String(st.restartCount || 0)]);
    })));
    const names = (p.spec.containers || []).map((c) => c.name);
    if (picker.options.length !== names.length) {
      replace(picker, names.map((n) => h("option", { value: n }, n)));
      if (!following) follow(names[0]);
    }
    const evs = events.list().sort((a, b) => evTime(b) - evTime(a));
    replace(eventsBox, table(["Last seen", "Type", "Reason", "From", "Message"], evs.map((e) =>
      row(e.metadata.name, [age(lastSeen(e)), pill(e.type || "Normal", e.type === "Warning" ? "bad" : "ok"), e.reason,
        e.source?.component || e.reportingComponent || "", `${e.message || ""}${e.count > 1 ? ` (×${e.count})` : ""}`])),
    { empty: events.synced ? "no events" : "loading…" }));
  });
  const set = new WatchSet([pod, events]).start();
  const ages = setInterval(draw, AGE_REFRESH_MS);   // ages move without events
  return () => { clearInterval(ages); set.stop(); clearTimeout(retry); if (logAbort) logAbort.abort(); };
}

export function lastSeen(e) {
  return e.lastTimestamp || e.eventTime || e.firstTimestamp || e.metadata.creationTimestamp;
}

export function evTime(e) {
  return Date.parse(lastSeen(e)) || 0;
}
