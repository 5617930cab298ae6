// Cluster overview: every node with capacity, allocatable, usage (metrics.k8s.io) and conditions,
// and how many pods and Deployments are where they should be.

import { ListWatch, WatchSet, get } from "./api.js";
import { AGE_REFRESH_MS, age, errorBox, h, pill, replace, row, table, throttled } from "./dom.js";
import { bytes, cores, percent } from "./quantity.js";

// The metrics API serves no watch (upstream's neither): usage is read again at its resolution.
const METRICS_PERIOD_MS = 15000;

export function isReady(node) {
  return (node.status?.conditions || []).some((c) => c.type === "Ready" && c.status === "True");
}

function roles(node) {
  const out = Object.keys(node.metadata.labels || {})
    .filter((k) => k.startsWith("node-role.kubernetes.io/")).map((k) => k.split("/")[1]);
  return out.length ? out.join(",") : "<none>";
}

function conditions(node) {
  return (node.status?.conditions || []).map((c) => {
    const good = c.type === "Ready" ? c.status === "True" : c.status === "False";
    return pill(`${c.type}=${c.status}`, good ? "ok" : "bad");
  });
}

export function render(root) {
  const summary = h("div", { class: "cards" });
  const errors = h("div");
  const nodesBox = h("div", { id: "nodes" });
  const metricsNote = h("p", { class: "muted" });
  replace(root, h("h2", {}, "Cluster"), summary, errors, h("h3", {}, "Nodes"), nodesBox, metricsNote);
  let usage = new Map();
  let metricsError = null;

  const nodes = new ListWatch("/api/v1/nodes", { onChange: () => draw(), onError: () => draw() });
  const pods = new ListWatch("/api/v1/pods", { onChange: () => draw(), onError: () => draw() });
  const deployments = new ListWatch("/apis/apps/v1/deployments", { onChange: () => draw(), onError: () => draw() });

  const draw = throttled(() => {
    const ns = nodes.list().sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    const ps = pods.list();
    const ds = deployments.list();
    const running = ps.filter((p) => p.status?.phase === "Running").length;
    const avail = ds.filter((d) => (d.status?.availableReplicas || 0) >= (d.spec?.replicas ?? 1)).length;
    replace(summary,
      card("Nodes Ready", `${ns.filter(isReady).length}/${ns.length}`, "nodes-ready"),
      card("Pods Running", `${running}/${ps.length}`, "pods-running"),
      card("Deployments available", `${avail}/${ds.length}`, "deployments-available"));
    replace(errors, [nodes, pods, deployments].map((w) => errorBox(w.error)));
    const perNode = new Map();
    for (const p of ps) if (p.spec?.nodeName) perNode.set(p.spec.nodeName, (perNode.get(p.spec.nodeName) || 0) + 1);
    replace(nodesBox, table(
      ["Name", "Status", "Roles", "Internal IP", "CPU used / allocatable", "Memory used / allocatable", "Pods",
        "Conditions", "Kubelet / runtime", "Age"],
      ns.map((n) => {
        const st = n.status || {};
        const alloc = st.allocatable || st.capacity || {};
        const cap = st.capacity || {};
        const u = usage.get(n.metadata.name);
        const ip = (st.addresses || []).find((a) => a.type === "InternalIP")?.address || "";
        const ready = isReady(n);
        return row(n.metadata.name, [
          h("strong", {}, n.metadata.name),
          pill(ready ? "Ready" : "NotReady", ready ? "ok" : "bad"),
          roles(n),
          ip,
          h("span", { title: `capacity ${cap.cpu}` }, u ? `${cores(u.cpu)} (${percent(u.cpu, alloc.cpu)}) / ` : "",
            cores(alloc.cpu)),
          h("span", { title: `capacity ${cap.memory}` }, u ? `${bytes(u.memory)} (${percent(u.memory, alloc.memory)}) / ` : "",
            bytes(alloc.memory)),
          `${perNode.get(n.metadata.name) || 0} / ${alloc.pods || cap.pods || "?"}`,
          h("span", { class: "conds" }, conditions(n)),
          `${st.nodeInfo?.kubeletVersion || ""} / ${st.nodeInfo?.containerRuntimeVersion || ""}`,
          age(n.metadata.creationTimestamp),
        ], { dataset: { ready: String(ready) } });
      }), { empty: nodes.synced ? "no nodes" : "loading…" }));
    metricsNote.textContent = metricsError
      ? `Usage unavailable: ${metricsError.status || ""} ${metricsError.message}`
      : `Usage from metrics.k8s.io, read every ${METRICS_PERIOD_MS / 1000}s (the metrics API serves no watch).`;
  });

  async function readMetrics() {
    try {
      const list = await get("/apis/metrics.k8s.io/v1beta1/nodes");
      usage = new Map((list.items || []).map((m) => [m.metadata.name, m.usage]));
      metricsError = null;
    } catch (e) {
      metricsError = e;
    }
    draw();
  }
  readMetrics();
  const timer = setInterval(readMetrics, METRICS_PERIOD_MS);
  const set = new WatchSet([nodes, pods, deployments]).start();
  const ages = setInterval(draw, AGE_REFRESH_MS);   // ages move without events
  return () => { clearInterval(timer); clearInterval(ages); set.stop(); };
}

function card(title, value, id) {
  return h("div", { class: "card stat", id }, h("div", { class: "value" }, value), h("div", { class: "muted" }, title));
}
