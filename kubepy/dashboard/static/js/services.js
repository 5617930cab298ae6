// Services with their endpoints (EndpointSlices) and every way to reach them: the cluster IP and
// DNS name from pods, NodePorts on every node, load-balancer addresses, and Ingress rules.

import { ListWatch, WatchSet, collection } from "./api.js";
import { remove } from "./actions.js";
import { AGE_REFRESH_MS, age, errorBox, h, pill, replace, row, table, throttled } from "./dom.js";

export function endpointsOf(slices, svc) {
  const out = [];
  for (const sl of slices) {
    if (sl.metadata.namespace !== svc.metadata.namespace) continue;
    if ((sl.metadata.labels || {})["kubernetes.io/service-name"] !== svc.metadata.name) continue;
    const ports = (sl.ports || []).map((p) => p.port).filter(Boolean);
    for (const ep of sl.endpoints || []) {
      for (const addr of ep.addresses || []) {
        out.push({ address: addr, ports, ready: ep.conditions?.ready !== false, node: ep.nodeName || "",
          pod: ep.targetRef?.kind === "Pod" ? ep.targetRef.name : "" });
      }
    }
  }
  return out.sort((a, b) => a.address.localeCompare(b.address, undefined, { numeric: true }));
}

export function waysToReach(svc, nodes, ingresses) {
  const spec = svc.spec || {}, m = svc.metadata;
  const ways = [];
  if (spec.type === "ExternalName") return [`DNS ${m.name}.${m.namespace}.svc.cluster.local → CNAME ${spec.externalName}`];
  for (const p of spec.ports || []) {
    const proto = (p.protocol || "TCP").toLowerCase();
    if (spec.clusterIP && spec.clusterIP !== "None") ways.push(`${spec.clusterIP}:${p.port}/${proto} (cluster IP, from pods and nodes)`);
    ways.push(`${m.name}.${m.namespace}.svc.cluster.local:${p.port}${spec.clusterIP === "None" ? " (headless: DNS answers the pods' IPs)" : ""}`);
    if (p.nodePort) {
      const ips = nodes.map((n) => (n.status?.addresses || []).find((a) => a.type === "InternalIP")?.address).filter(Boolean);
      ways.push(ips.length ? ips.map((ip) => `${ip}:${p.nodePort}`).join(", ") + " (NodePort)" : `any node's address, port ${p.nodePort} (NodePort)`);
    }
    for (const lb of svc.status?.loadBalancer?.ingress || []) ways.push(`${lb.ip || lb.hostname}:${p.port} (LoadBalancer)`);
    if (spec.type === "LoadBalancer" && !(svc.status?.loadBalancer?.ingress || []).length) ways.push("LoadBalancer address pending");
    for (const ip of spec.externalIPs || []) ways.push(`${ip}:${p.port} (external IP)`);
  }
  for (const ing of ingresses) {
    if (ing.metadata.namespace !== m.namespace) continue;
    const addr = (ing.status?.loadBalancer?.ingress || []).map((x) => x.ip || x.hostname)[0];
    const tls = (ing.spec?.tls || []).length ? "https" : "http";
    for (const rule of ing.spec?.rules || []) {
      for (const path of rule.http?.paths || []) {
        if (path.backend?.service?.name !== m.name) continue;
        const host = rule.host || addr || "<ingress address>";
        ways.push(`${tls}://${host}${path.path || "/"} (Ingress ${ing.metadata.name}${rule.host && addr ? ` at ${addr}` : ""})`);
      }
    }
    if (ing.spec?.defaultBackend?.service?.name === m.name) ways.push(`${tls}://${addr || "<ingress address>"}/ (Ingress ${ing.metadata.name}, default backend)`);
  }
  return ways;
}

function portsText(svc) {
  return (svc.spec?.ports || []).map((p) => `${p.name ? p.name + " " : ""}${p.port}${p.nodePort ? ":" + p.nodePort : ""}→${p.targetPort ?? p.port}/${p.protocol || "TCP"}`).join(", ");
}

export function render(root, ctx) {
  const errors = h("div");
  const box = h("div", { id: "service-list" });
  const note = h("p", { class: "muted" });
  replace(root, h("h2", {}, "Services", h("span", { class: "muted" }, ctx.namespace ? ` in ${ctx.namespace}` : " in all namespaces")),
    errors, box, note);
  const on = { onChange: () => draw(), onError: () => draw() };
  const services = new ListWatch(collection("v1", "services", ctx.namespace), on);
  const slices = new ListWatch(collection("discovery.k8s.io/v1", "endpointslices", ctx.namespace), on);
  const ingresses = new ListWatch(collection("networking.k8s.io/v1", "ingresses", ctx.namespace), on);
  const nodes = new ListWatch("/api/v1/nodes", on);
  const draw = throttled(() => {
    replace(errors, errorBox(services.error), errorBox(slices.error), errorBox(ingresses.error));
    note.textContent = nodes.error ? `Node addresses for NodePorts unavailable: ${nodes.error.message}` : "";
    const items = services.list().sort((a, b) => (a.metadata.namespace + a.metadata.name).localeCompare(b.metadata.namespace + b.metadata.name));
    replace(box, table(["Name", "Namespace", "Type", "Ports", "Endpoints", "How to reach it", "Age", ""], items.map((s) => {
      const eps = endpointsOf(slices.list(), s);
      return row(`${s.metadata.namespace}/${s.metadata.name}`, [
        h("strong", {}, s.metadata.name), s.metadata.namespace, s.spec?.type || "ClusterIP", portsText(s),
        eps.length ? h("ul", { class: "plain" }, eps.map((e) => h("li", {}, pill(`${e.address}${e.ports.length ? ":" + e.ports.join(",") : ""}`, e.ready ? "ok" : "warn"),
          e.pod ? ` ${e.pod}` : "", e.node ? h("span", { class: "muted" }, ` on ${e.node}`) : ""))) : h("span", { class: "muted" }, s.spec?.selector ? "none ready" : "no selector"),
        h("ul", { class: "plain reach" }, waysToReach(s, nodes.list(), ingresses.list()).map((w) => h("li", {}, h("code", {}, w)))),
        age(s.metadata.creationTimestamp),
        h("button", { type: "button", class: "danger", onclick: () => remove("v1", "services", s.metadata.namespace, s.metadata.name) }, "Delete"),
      ]);
    }), { empty: services.synced ? "no services" : "loading…" }));
  });
  const set = new WatchSet([services, slices, ingresses, nodes]).start();
  const ages = setInterval(draw, AGE_REFRESH_MS);   // ages move without events
  return () => { clearInterval(ages); set.stop(); };
}
