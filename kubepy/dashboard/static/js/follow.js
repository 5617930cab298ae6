// Following one Deployment through the system: its steps, built only from what the API says
// (the objects' own timestamps and conditions from watches, and the components' Events), each
// with the component that took it and the Linux commands that show it on the node.
//
//   Deployment ─(deployment controller)→ ReplicaSet ─(replicaset controller)→ Pods
//     ─(scheduler: Scheduled event with the scores)→ node ─(kubelet + containerd)→ sandbox, containers
//     ─(kubelet)→ Ready ─(endpointslice controller)→ EndpointSlice ─(kube-proxy)→ KUBE-SVC-… rules
//
// Times: an object's own timestamp where it has one (seconds); where it has none (a pod IP
// appearing, an address in an EndpointSlice) the time this page saw the watch event, marked
// "seen"; what was already there when following began is marked so. kube-proxy writes nothing to
// the API when it syncs, so its step has no time: its commands show the rules on each node.

import { ctr, labelFilter, onNode, podNetns, proxyMode } from "./commands.js";

export const MAX_PODS = 6;

function ownedBy(obj, owner) {
  return (obj.metadata.ownerReferences || []).some((r) => r.uid === owner.metadata.uid);
}

function cond(pod, type) {
  return (pod.status?.conditions || []).find((c) => c.type === type);
}

function ts(text) {
  const t = Date.parse(text || "");
  return Number.isNaN(t) ? null : t;
}

export function selects(selector, labels) {
  if (!selector || !Object.keys(selector).length) return false;
  return Object.entries(selector).every(([k, v]) => (labels || {})[k] === v);
}

function eventsFor(events, obj, reason) {
  return events.filter((e) => e.involvedObject?.uid === obj.metadata.uid && (!reason || e.reason === reason))
    .sort((a, b) => (ts(a.firstTimestamp || a.eventTime) || 0) - (ts(b.firstTimestamp || b.eventTime) || 0));
}

function eventTime(e) {
  return e ? ts(e.firstTimestamp || e.eventTime || e.metadata.creationTimestamp) : null;
}

// Record when addresses first appeared (pod IPs, ready endpoints): the API keeps no time for them.
export class Sightings {
  constructor() { this.times = new Map(); }
  mark(key, initial) {
    if (!this.times.has(key)) this.times.set(key, { at: Date.now(), initial });
  }
  get(key) { return this.times.get(key); }
  observe({ pods, slices }, initial) {
    for (const p of pods) if (p.status?.podIP) this.mark(`ip:${p.metadata.uid}`, initial);
    for (const sl of slices) {
      const svc = (sl.metadata.labels || {})["kubernetes.io/service-name"];
      for (const ep of sl.endpoints || []) {
        if (ep.conditions?.ready === false) continue;
        for (const a of ep.addresses || []) this.mark(`ep:${sl.metadata.namespace}/${svc}:${a}`, initial);
      }
    }
  }
}

// -> [{ id, title, component: ["apiserver"] | ["kubelet", node] …, time, seen, detail, commands, done }]
export function followSteps({ deployment: d, replicaSets, pods, services, events, nodes, sightings }) {
  if (!d) return [];
  const ns = d.metadata.namespace;
  const nodeByName = new Map(nodes.map((n) => [n.metadata.name, n]));
  const steps = [];
  const add = (s) => steps.push({ done: true, seen: false, commands: [], detail: "", ...s });
  const dev = eventsFor(events, d, "ScalingReplicaSet");

  add({ id: "deployment", title: `Deployment ${ns}/${d.metadata.name} stored`, component: ["apiserver", "store"],
    time: ts(d.metadata.creationTimestamp),
    detail: `replicas ${d.spec.replicas ?? 1}; the API server validated it and wrote it to the store`,
    commands: [`kubectl get deployment ${d.metadata.name} -n ${ns} -o yaml`] });

  const rss = replicaSets.filter((rs) => ownedBy(rs, d))
    .sort((a, b) => (ts(a.metadata.creationTimestamp) || 0) - (ts(b.metadata.creationTimestamp) || 0));
  if (!rss.length) {
    add({ id: "rs", title: "ReplicaSet: waiting for the deployment controller", component: ["controller-manager"],
      time: null, done: false });
  }
  for (const rs of rss) {
    const scaled = dev.find((e) => (e.message || "").includes(rs.metadata.name));
    add({ id: `rs:${rs.metadata.name}`, title: `ReplicaSet ${rs.metadata.name} created`,
      component: ["controller-manager"], time: ts(rs.metadata.creationTimestamp),
      detail: scaled ? `deployment controller: ${scaled.message}` : "by the deployment controller",
      commands: [`kubectl get replicaset ${rs.metadata.name} -n ${ns} -o wide`] });
  }
  const mine = pods.filter((p) => rss.some((rs) => ownedBy(p, rs)))
    .sort((a, b) => (ts(a.metadata.creationTimestamp) || 0) - (ts(b.metadata.creationTimestamp) || 0) ||
      a.metadata.name.localeCompare(b.metadata.name));
  if (rss.length && !mine.length) {
    add({ id: "pods", title: "Pods: waiting for the replicaset controller", component: ["controller-manager"],
      time: null, done: false });
  }
  const selecting = services.filter((s) => s.metadata.namespace === ns && selects(s.spec?.selector, d.spec.template?.metadata?.labels));
  for (const p of mine.slice(0, MAX_PODS)) {
    steps.push(...podSteps(p, { ns, nodeByName, events, selecting, sightings }));
  }
  if (mine.length > MAX_PODS) {
    add({ id: "more", title: `… and ${mine.length - MAX_PODS} more pods`, component: [], time: null });
  }
  if (!selecting.length) {
    add({ id: "no-service", title: "No Service selects these pods: no endpoints, no proxy rules", component: [],
      time: null, done: false,
      detail: "expose it to follow it on to the kube-proxy rules",
      commands: [`kubectl expose deployment ${d.metadata.name} -n ${ns} --port 80 --target-port <container port>`] });
  }
  for (const s of selecting) {
    const ready = mine.filter((p) => p.status?.podIP && sightings.get(`ep:${ns}/${s.metadata.name}:${p.status.podIP}`));
    add({ id: `rules:${s.metadata.name}`, title: `kube-proxy: Service ${s.metadata.name} → ${ready.length} endpoint(s) on every node`,
      component: nodes.map((n) => ["proxy", n.metadata.name]).flat(), time: null, done: ready.length > 0,
      detail: "kube-proxy reports its syncs to no API object: see its rules on any node",
      commands: [], service: s });
  }
  return steps;
}

function podSteps(p, { ns, nodeByName, events, selecting, sightings }) {
  const out = [];
  const name = p.metadata.name;
  const node = p.spec.nodeName || "";
  const n = nodeByName.get(node);
  const add = (s) => out.push({ done: true, seen: false, commands: [], detail: "", pod: name, ...s });
  const made = events.find((e) => e.reason === "SuccessfulCreate" && (e.message || "").endsWith(` ${name}`));
  add({ id: `pod:${name}`, title: `Pod ${name} created`, component: ["controller-manager"],
    time: ts(p.metadata.creationTimestamp),
    detail: `${made ? `replicaset controller: ${made.message}` : "by the replicaset controller"}; no node yet`,
    commands: [`kubectl get pod ${name} -n ${ns} -o wide`] });

  const scheduled = eventsFor(events, p, "Scheduled").pop();
  const sc = cond(p, "PodScheduled");
  const failed = eventsFor(events, p, "FailedScheduling").pop();
  if (node) {
    add({ id: `pod:${name}:scheduled`, title: `${name} scheduled to ${node}`, component: ["scheduler"],
      time: eventTime(scheduled) || ts(sc?.lastTransitionTime), node,
      detail: scheduled ? `scheduler: ${scheduled.message}` : "scheduler: (its Scheduled event has not arrived)",
      commands: [`kubectl get events -n ${ns} --field-selector involvedObject.name=${name},reason=Scheduled`] });
  } else {
    add({ id: `pod:${name}:scheduled`, title: `${name}: waiting for the scheduler`, component: ["scheduler"],
      time: null, done: false, detail: failed ? failed.message : "" });
    return out;
  }
  const ip = p.status?.podIP;
  const seenIP = sightings.get(`ip:${p.metadata.uid}`);
  const netns = podNetns(ns, name, p.metadata.uid);
  add({ id: `pod:${name}:sandbox`, title: ip ? `${name}: sandbox and network up, IP ${ip}` : `${name}: kubelet starting the sandbox`,
    component: [["kubelet", node], ["containerd", node]].flat(), node, done: !!ip,
    time: seenIP ? seenIP.at : null, seen: !!seenIP, initial: seenIP?.initial,
    detail: `kubelet on ${node}: pod network namespace ${netns}, veth on the node's bridge, pause container in containerd`,
    commands: [`ip netns exec ${netns} ip -4 addr show eth0`,
      ctr(n, `containers ls ${labelFilter({ "io.kubernetes.pod.name": name, "io.kubepy.container.kind": "sandbox" })}`)] });
  const statuses = new Map((p.status?.containerStatuses || []).map((c) => [c.name, c]));
  for (const c of p.spec.containers || []) {
    const st = statuses.get(c.name);
    const started = st?.state?.running?.startedAt || st?.lastState?.terminated?.startedAt || st?.state?.terminated?.startedAt;
    const waiting = st?.state?.waiting?.reason;
    add({ id: `pod:${name}:container:${c.name}`, title: started ? `${name}: container ${c.name} started` : `${name}: container ${c.name} ${waiting || "not started"}`,
      component: ["containerd", node], node, time: ts(started), done: !!started,
      detail: `image ${c.image}${st?.containerID ? `, ${st.containerID}` : ""}`,
      commands: [ctr(n, `containers ls ${labelFilter({ "io.kubernetes.pod.name": name, "io.kubernetes.container.name": c.name })}`),
        ctr(n, "tasks ls")] });
  }
  const ready = cond(p, "Ready");
  const isReady = ready?.status === "True";
  add({ id: `pod:${name}:ready`, title: isReady ? `${name} Ready` : `${name} not Ready${ready?.reason ? ` (${ready.reason})` : ""}`,
    component: ["kubelet", node], node, time: isReady ? ts(ready.lastTransitionTime) : null, done: isReady,
    detail: "kubelet: every container running and its readiness probe passing; it wrote the Ready condition",
    commands: [`kubectl get pod ${name} -n ${ns} -o jsonpath='{.status.conditions}'`] });
  for (const s of selecting) {
    const key = `ep:${ns}/${s.metadata.name}:${ip}`;
    const seen = ip ? sightings.get(key) : null;
    add({ id: `pod:${name}:endpoints:${s.metadata.name}`,
      title: seen ? `${name} (${ip}) in the endpoints of Service ${s.metadata.name}` : `${name}: not yet in the endpoints of ${s.metadata.name}`,
      component: ["controller-manager"], time: seen ? seen.at : null, seen: !!seen, initial: seen?.initial, done: !!seen,
      detail: "endpointslice controller: a ready pod the Service selects becomes a ready endpoint",
      commands: [`kubectl get endpointslices -n ${ns} -l kubernetes.io/service-name=${s.metadata.name} -o wide`] });
  }
  return out;
}

// The commands of a kube-proxy step, once the chain names are known (they need a SHA-256):
// chains = { iptables: "KUBE-SVC-…", nftables: "service-…" }, each node's in the layout its proxy writes.
export function proxyCommands(nodes, service, chains) {
  const ip = service.spec?.clusterIP;
  return nodes.flatMap((n) => [
    proxyMode(n) === "nftables" ? onNode(n, `nft list chain ip kube-proxy ${chains.nftables}`)
      : onNode(n, `iptables -t nat -S ${chains.iptables}`),
    ...(ip && ip !== "None" ? [onNode(n, `conntrack -L -d ${ip}`)] : []),
  ]);
}
