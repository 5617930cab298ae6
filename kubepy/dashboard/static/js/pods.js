// Pods: status as kubectl prints it, readiness, restarts, node and IP; live from a watch.

import { ListWatch, collection } from "./api.js";
import { remove } from "./actions.js";
import { AGE_REFRESH_MS, age, errorBox, h, pill, replace, row, table, throttled } from "./dom.js";

// kubectl's STATUS column: a waiting or terminated reason wins over the phase.
export function podStatus(pod) {
  if (pod.metadata.deletionTimestamp) return "Terminating";
  const st = pod.status || {};
  let reason = st.reason || st.phase || "Pending";
  for (const c of st.initContainerStatuses || []) {
    if (c.state?.terminated && c.state.terminated.exitCode === 0) continue;
    if (c.state?.waiting?.reason && c.state.waiting.reason !== "PodInitializing") return `Init:${c.state.waiting.reason}`;
    if (c.state?.terminated) return `Init:${c.state.terminated.reason || "Error"}`;
    return "Init:0/" + (pod.spec.initContainers || []).length;
  }
  for (const c of st.containerStatuses || []) {
    if (c.state?.waiting?.reason) reason = c.state.waiting.reason;
    else if (c.state?.terminated?.reason) reason = c.state.terminated.reason;
  }
  return reason;
}

export function readyCount(pod) {
  const cs = pod.status?.containerStatuses || [];
  return `${cs.filter((c) => c.ready).length}/${(pod.spec.containers || []).length}`;
}

export function restarts(pod) {
  return (pod.status?.containerStatuses || []).reduce((n, c) => n + (c.restartCount || 0), 0);
}

export function statusKind(status) {
  if (["Running", "Succeeded", "Completed"].includes(status)) return "ok";
  if (["Pending", "ContainerCreating", "Terminating", "PodInitializing"].includes(status) || status.startsWith("Init:0")) return "warn";
  return "bad";
}

export function render(root, ctx) {
  const errors = h("div");
  const box = h("div", { id: "pods" });
  replace(root, h("h2", {}, "Pods", h("span", { class: "muted" }, ctx.namespace ? ` in ${ctx.namespace}` : " in all namespaces")),
    errors, box);
  const pods = new ListWatch(collection("v1", "pods", ctx.namespace), { onChange: () => draw(), onError: () => draw() });
  const draw = throttled(() => {
    replace(errors, errorBox(pods.error));
    const items = pods.list().sort((a, b) => (a.metadata.namespace + a.metadata.name).localeCompare(b.metadata.namespace + b.metadata.name));
    replace(box, table(["Name", "Namespace", "Status", "Ready", "Restarts", "Node", "IP", "Age", ""],
      items.map((p) => {
        const m = p.metadata;
        const status = podStatus(p);
        return row(`${m.namespace}/${m.name}`, [
          h("a", { href: `#/pod/${encodeURIComponent(m.namespace)}/${encodeURIComponent(m.name)}` }, m.name),
          m.namespace, pill(status, statusKind(status)), readyCount(p), String(restarts(p)),
          p.spec.nodeName || "", p.status?.podIP || "", age(m.creationTimestamp),
          h("span", { class: "actions" },
            h("a", { href: `#/pod/${encodeURIComponent(m.namespace)}/${encodeURIComponent(m.name)}`, class: "button" }, "Logs"),
            h("button", { type: "button", class: "danger", onclick: () => remove("v1", "pods", m.namespace, m.name) }, "Delete")),
        ], { dataset: { status } });
      }), { empty: pods.synced ? "no pods" : "loading…" }));
  });
  pods.start();
  const ages = setInterval(draw, AGE_REFRESH_MS);   // ages move without events
  return () => { clearInterval(ages); pods.stop(); };
}
