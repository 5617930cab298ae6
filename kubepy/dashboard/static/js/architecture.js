// The architecture at work: the cluster drawn as the diagram people learn from (the control
// plane's API server, store, scheduler and controller manager; each node's kubelet, kube-proxy,
// containerd and pods), live from watches, and one Deployment followed through it step by step.

import { ListWatch, WatchSet, collection } from "./api.js";
import { clock, copyButton, errorBox, h, replace, s, throttled } from "./dom.js";
import { nftServiceChain, serviceChain } from "./commands.js";
import { Sightings, followSteps, proxyCommands } from "./follow.js";
import { isReady } from "./overview.js";
import { podStatus, statusKind } from "./pods.js";

const ACTIVE_MS = 4000;   // how long a component glows after it took a step
const W = 1000;

function box(id, x, y, w, hgt, label, sub, cls = "") {
  return s("g", { class: `comp ${cls}`, id, dataset: { component: id } },
    s("rect", { x, y, width: w, height: hgt, rx: 6 }),
    s("text", { x: x + w / 2, y: y + (sub ? hgt / 2 - 2 : hgt / 2 + 5), "text-anchor": "middle", class: "label" }, label),
    sub ? s("text", { x: x + w / 2, y: y + hgt / 2 + 14, "text-anchor": "middle", class: "sub" }, sub) : null);
}

function line(x1, y1, x2, y2) {
  return s("line", { x1, y1, x2, y2, class: "wire" });
}

// -> <svg>; `active` is a set of component ids ("scheduler", "kubelet:node1", …).
export function drawCluster({ nodes, pods, followed, active }) {
  const perRow = Math.min(Math.max(nodes.length, 1), 4);
  const nw = (W - 40 - (perRow - 1) * 20) / perRow;
  const nh = 250;
  const rows = Math.max(1, Math.ceil(nodes.length / perRow));
  const height = 230 + rows * (nh + 20);
  const on = (id) => (active.has(id) ? "active" : "");
  const parts = [
    s("rect", { x: 10, y: 10, width: W - 20, height: 160, rx: 10, class: "plane" }),
    s("text", { x: 24, y: 32, class: "title" }, "control plane"),
    box("scheduler", 40, 70, 190, 60, "scheduler", "filter, score, bind", on("scheduler")),
    box("apiserver", 300, 70, 200, 60, "API server", "authn, RBAC, admission, watch", on("apiserver")),
    box("store", 560, 70, 140, 60, "store", "SQLite or etcd", on("store")),
    box("controller-manager", 760, 70, 210, 60, "controller manager", "deployment, replicaset, endpointslice…",
      on("controller-manager")),
    line(230, 100, 300, 100), line(500, 100, 560, 100), line(700, 100, 760, 100),
  ];
  nodes.forEach((n, i) => {
    const name = n.metadata.name;
    const x = 20 + (i % perRow) * (nw + 20);
    const y = 210 + Math.floor(i / perRow) * (nh + 20);
    const ip = (n.status?.addresses || []).find((a) => a.type === "InternalIP")?.address || "";
    const ready = isReady(n);
    const half = (nw - 30) / 2;
    parts.push(line(400, 130, x + nw / 2, y));
    // Followed pods first, so they are drawn even on a node with more pods than its box holds.
    const mine = pods.filter((p) => p.spec.nodeName === name)
      .sort((a, b) => Number(followed.has(b.metadata.uid)) - Number(followed.has(a.metadata.uid)));
    const perLine = Math.max(1, Math.floor((nw - 20) / 26));
    const room = perLine * 4;
    const dots = mine.slice(0, mine.length > room ? room - 1 : room).map((p, j) => {
      const col = j % perLine;
      const r = Math.floor(j / perLine);
      const cx = x + 22 + col * 26, cy = y + 150 + r * 26;
      const st = podStatus(p);
      const f = followed.has(p.metadata.uid);
      return s("g", { class: `pod ${statusKind(st)} ${f ? "followed" : ""}`, dataset: { pod: `${p.metadata.namespace}/${p.metadata.name}`, status: st } },
        s("circle", { cx, cy, r: f ? 10 : 7 }),
        s("title", {}, `${p.metadata.namespace}/${p.metadata.name}: ${st}${p.status?.podIP ? " " + p.status.podIP : ""}`));
    });
    parts.push(s("g", { class: `node ${ready ? "ready" : "notready"}`, id: `node-${name}`, dataset: { node: name } },
      s("rect", { x, y, width: nw, height: nh, rx: 10, class: "nodebox" }),
      s("text", { x: x + 12, y: y + 20, class: "title" }, name),
      s("text", { x: x + nw - 12, y: y + 20, "text-anchor": "end", class: "sub" }, `${ip} ${ready ? "Ready" : "NotReady"}`),
      box(`kubelet:${name}`, x + 10, y + 32, half, 40, "kubelet", "", on(`kubelet:${name}`)),
      box(`proxy:${name}`, x + 20 + half, y + 32, half, 40, "kube-proxy", "", on(`proxy:${name}`)),
      box(`containerd:${name}`, x + 10, y + 82, nw - 20, 36, "containerd", n.status?.nodeInfo?.containerRuntimeVersion || "",
        on(`containerd:${name}`)),
      s("text", { x: x + 12, y: y + 136, class: "sub" }, `pods (${mine.length})`),
      dots,
      mine.length > room ? s("text", { x: x + nw - 12, y: y + nh - 10, "text-anchor": "end", class: "sub" },
        `+${mine.length - room + 1} more`) : null));
  });
  return s("svg", { id: "arch", viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": "the cluster's architecture" }, parts);
}

function componentIds(step) {
  // ["kubelet", "n1", "containerd", "n1"] -> kubelet:n1, containerd:n1; ["apiserver", "store"] -> both.
  const out = [];
  const c = step.component || [];
  for (let i = 0; i < c.length; i++) {
    if (["kubelet", "proxy", "containerd"].includes(c[i])) { out.push(`${c[i]}:${c[i + 1]}`); i++; } else out.push(c[i]);
  }
  return out;
}

function componentName(step) {
  return componentIds(step).map((id) => id.replace("proxy:", "kube-proxy on ").replace("kubelet:", "kubelet on ")
    .replace("containerd:", "containerd on ")).filter((x, i, a) => a.indexOf(x) === i).slice(0, 3).join(", ") +
    (componentIds(step).length > 3 ? ", …" : "");
}

export function render(root, ctx) {
  const input = h("input", { id: "follow-name", placeholder: "deployment (or namespace/deployment)", autocomplete: "off" });
  const followBtn = h("button", { type: "submit", id: "follow-button" }, "Follow");
  const nextBtn = h("button", { type: "button", id: "follow-next" }, "Follow the next new Deployment");
  const status = h("p", { id: "follow-status", class: "muted" });
  const errors = h("div");
  const picture = h("div", { class: "picture" });
  const timeline = h("ol", { id: "timeline", class: "timeline" });
  replace(root, h("h2", {}, "Architecture"),
    h("form", { class: "toolbar", onsubmit: (e) => { e.preventDefault(); followName(input.value.trim()); } }, input, followBtn, nextBtn),
    status, errors, h("div", { class: "arch-layout" }, picture, h("section", {}, h("h3", {}, "Timeline"), timeline)));

  const scope = ctx.namespace;
  const sightings = new Sightings();
  const doneAt = new Map();        // step id -> when this page first saw it done (for the glow)
  const chains = new Map();        // "ns/svc/port" -> {iptables: KUBE-SVC-…, nftables: service-…} (computed asynchronously)
  let target = null;               // { namespace, name } or { next: true, since }
  let initialIds = null;           // steps already done when following began: they do not glow
  const on = (ev) => {
    if (ev.type === "SYNC" || ev.type === "ADDED" || ev.type === "MODIFIED") {
      sightings.observe({ pods: pods.list(), slices: slices.list() }, ev.type === "SYNC");
    }
    draw();
  };
  const mk = (gv, res, ns) => new ListWatch(collection(gv, res, ns), { onChange: on, onError: () => draw() });
  const nodes = new ListWatch("/api/v1/nodes", { onChange: on, onError: () => draw() });
  const pods = mk("v1", "pods", scope);
  const slices = mk("discovery.k8s.io/v1", "endpointslices", scope);
  const deployments = new ListWatch(collection("apps/v1", "deployments", scope), {
    onChange: (ev) => {
      if (target?.next && ev.type === "ADDED" && Date.parse(ev.object.metadata.creationTimestamp) >= target.since - 1000) {
        target = { namespace: ev.object.metadata.namespace, name: ev.object.metadata.name };
        input.value = `${target.namespace}/${target.name}`;
        initialIds = new Set();
      }
      on(ev);
    }, onError: () => draw() });
  const replicaSets = mk("apps/v1", "replicasets", scope);
  const services = mk("v1", "services", scope);
  const events = mk("v1", "events", scope);
  const all = [nodes, pods, slices, deployments, replicaSets, services, events];

  function followName(text) {
    if (!text) return;
    const [a, b] = text.includes("/") ? text.split("/", 2) : [scope || "default", text];
    target = { namespace: a, name: b };
    initialIds = null;
    doneAt.clear();
    draw();
  }
  nextBtn.addEventListener("click", () => {
    target = { next: true, since: Date.now() };
    input.value = "";
    doneAt.clear();
    draw();
  });

  function stepTime(step, t0) {
    if (step.time === null || step.time === undefined) return h("span", { class: "time muted" }, step.done ? "—" : "pending");
    if (step.initial) return h("span", { class: "time muted", title: "already so when this page began to watch" }, "before");
    // The API keeps its timestamps to the second; what this page saw arrive it knows to the millisecond.
    const precise = step.seen;
    return h("span", { class: "time", title: precise ? "when this page saw the watch event" : "the object's own timestamp (to the second)" },
      precise ? `seen ${clock(step.time)}` : clock(step.time).slice(0, 8),
      h("span", { class: "delta" }, t0 ? ` +${((step.time - t0) / 1000).toFixed(precise ? 1 : 0)}s` : ""));
  }

  function commandsOf(step) {
    if (!step.service) return step.commands;
    const out = [];
    for (const port of step.service.spec?.ports || []) {
      const key = `${step.service.metadata.namespace}/${step.service.metadata.name}/${port.name || ""}/${port.protocol || "TCP"}`;
      if (!chains.has(key)) {
        chains.set(key, null);
        const [ns, name] = [step.service.metadata.namespace, step.service.metadata.name];
        Promise.all([serviceChain(ns, name, port), nftServiceChain(ns, name, port)])
          .then(([iptables, nftables]) => { chains.set(key, { iptables, nftables }); draw(); });
      }
      if (chains.get(key)) out.push(...proxyCommands(nodes.list(), step.service, chains.get(key)));
    }
    return out;
  }

  const draw = throttled(() => {
    replace(errors, all.map((w) => errorBox(w.error)));
    const d = target && !target.next ? deployments.items.get(`${target.namespace}/${target.name}`) : null;
    const steps = d ? followSteps({ deployment: d, replicaSets: replicaSets.list(), pods: pods.list(),
      services: services.list(), events: events.list(), nodes: nodes.list(), sightings }) : [];
    const now = Date.now();
    if (d && initialIds === null) initialIds = new Set(steps.filter((x) => x.done).map((x) => x.id));
    for (const st of steps) if (st.done && !doneAt.has(st.id)) doneAt.set(st.id, now);
    const active = new Set();
    for (const st of steps) {
      if (st.done && !initialIds?.has(st.id) && now - doneAt.get(st.id) < ACTIVE_MS) componentIds(st).forEach((c) => active.add(c));
    }
    const followedUids = new Set(pods.list().filter((p) => d && (p.metadata.ownerReferences || []).some((r) =>
      replicaSets.list().some((rs) => rs.metadata.uid === r.uid && (rs.metadata.ownerReferences || []).some((o) => o.uid === d.metadata.uid))))
      .map((p) => p.metadata.uid));
    const nodeList = nodes.list().sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    replace(picture, drawCluster({ nodes: nodeList, pods: pods.list(), followed: followedUids, active }));
    if (!target) status.textContent = "Follow a Deployment by name, or the next one created (kubectl create deployment …, or the Apply view).";
    else if (target.next) status.textContent = `Waiting for the next new Deployment${scope ? ` in ${scope}` : ""}…`;
    else if (!d) status.textContent = deployments.synced ? `Waiting for Deployment ${target.namespace}/${target.name} to be created…` : "loading…";
    else {
      const podsReady = steps.filter((x) => x.id.endsWith(":ready"));
      status.textContent = `Following Deployment ${target.namespace}/${target.name}: ${podsReady.filter((x) => x.done).length}/${podsReady.length} pods Ready.`;
    }
    const t0 = d ? Date.parse(d.metadata.creationTimestamp) : null;
    replace(timeline, steps.map((st) => h("li", { class: `step ${st.done ? "done" : "pending"} ${active.size && componentIds(st).some((c) => active.has(c)) && now - (doneAt.get(st.id) || 0) < ACTIVE_MS ? "fresh" : ""}`,
      dataset: { step: st.id } },
    h("div", { class: "when" }, stepTime(st, t0)),
    h("div", { class: "what" },
      h("div", { class: "step-title" }, h("span", { class: "mark" }, st.done ? "✓" : "…"), " ", st.title,
        componentIds(st).length ? h("span", { class: "who" }, componentName(st)) : null),
      st.detail ? h("div", { class: "detail" }, st.detail) : null,
      commandsOf(st).map((c) => h("div", { class: "cmd" }, h("code", {}, c), copyButton(c)))))));
  });

  const set = new WatchSet(all).start();
  const tick = setInterval(draw, 1000);   // the glow fades and relative times move even without events
  draw();
  return () => { clearInterval(tick); set.stop(); };
}
