// Workloads: Deployments, StatefulSets, DaemonSets, Jobs and CronJobs with where their rollouts
// stand, and the actions people take on them (scale, restart, delete), each as the user.

import { ListWatch, WatchSet, collection } from "./api.js";
import { remove, restart, scale } from "./actions.js";
import { AGE_REFRESH_MS, age, errorBox, h, pill, replace, row, table, throttled } from "./dom.js";
import { daemonSetRollout, deploymentRollout, jobState, statefulSetRollout } from "./rollout.js";

const STATE_PILL = { complete: "ok", progressing: "warn", paused: "warn", failed: "bad" };

function rolloutPill(r) {
  return pill(r.text, STATE_PILL[r.state]);
}

function scaleControl(gv, resource, m, current) {
  const input = h("input", { type: "number", min: "0", value: String(current), class: "replicas",
    "aria-label": `replicas of ${m.name}` });
  return h("span", { class: "scale" }, input,
    h("button", { type: "button", class: "scale-button", onclick: () => scale(gv, resource, m.namespace, m.name, parseInt(input.value, 10)) }, "Scale"));
}

function actions(gv, resource, m, { canScale, replicas, canRestart = true }) {
  return h("span", { class: "actions" },
    canScale ? scaleControl(gv, resource, m, replicas) : null,
    canRestart ? h("button", { type: "button", onclick: () => restart(gv, resource, m.namespace, m.name) }, "Restart") : null,
    h("button", { type: "button", class: "danger", onclick: () => remove(gv, resource, m.namespace, m.name) }, "Delete"));
}

const KINDS = [
  { title: "Deployments", gv: "apps/v1", resource: "deployments",
    columns: ["Name", "Namespace", "Ready", "Up-to-date", "Available", "Rollout", "Age", ""],
    cells: (d) => [d.metadata.name, d.metadata.namespace, `${d.status?.readyReplicas || 0}/${d.spec.replicas ?? 1}`,
      String(d.status?.updatedReplicas || 0), String(d.status?.availableReplicas || 0), rolloutPill(deploymentRollout(d)),
      age(d.metadata.creationTimestamp),
      actions("apps/v1", "deployments", d.metadata, { canScale: true, replicas: d.spec.replicas ?? 1 })],
    data: (d) => ({ ready: String(d.status?.readyReplicas || 0), replicas: String(d.spec.replicas ?? 1) }) },
  { title: "StatefulSets", gv: "apps/v1", resource: "statefulsets",
    columns: ["Name", "Namespace", "Ready", "Rollout", "Age", ""],
    cells: (s) => [s.metadata.name, s.metadata.namespace, `${s.status?.readyReplicas || 0}/${s.spec.replicas ?? 1}`,
      rolloutPill(statefulSetRollout(s)), age(s.metadata.creationTimestamp),
      actions("apps/v1", "statefulsets", s.metadata, { canScale: true, replicas: s.spec.replicas ?? 1 })] },
  { title: "DaemonSets", gv: "apps/v1", resource: "daemonsets",
    columns: ["Name", "Namespace", "Desired", "Current", "Ready", "Up-to-date", "Rollout", "Age", ""],
    cells: (ds) => [ds.metadata.name, ds.metadata.namespace, String(ds.status?.desiredNumberScheduled || 0),
      String(ds.status?.currentNumberScheduled || 0), String(ds.status?.numberReady || 0),
      String(ds.status?.updatedNumberScheduled || 0), rolloutPill(daemonSetRollout(ds)), age(ds.metadata.creationTimestamp),
      actions("apps/v1", "daemonsets", ds.metadata, { canScale: false })] },
  { title: "Jobs", gv: "batch/v1", resource: "jobs",
    columns: ["Name", "Namespace", "Completions", "State", "Duration", "Age", ""],
    cells: (j) => [j.metadata.name, j.metadata.namespace, `${j.status?.succeeded || 0}/${j.spec.completions ?? 1}`,
      rolloutPill(jobState(j)), duration(j), age(j.metadata.creationTimestamp),
      actions("batch/v1", "jobs", j.metadata, { canScale: false, canRestart: false })] },
  { title: "CronJobs", gv: "batch/v1", resource: "cronjobs",
    columns: ["Name", "Namespace", "Schedule", "Suspend", "Active", "Last schedule", "Age", ""],
    cells: (c) => [c.metadata.name, c.metadata.namespace, h("code", {}, c.spec.schedule), String(!!c.spec.suspend),
      String((c.status?.active || []).length), c.status?.lastScheduleTime ? `${age(c.status.lastScheduleTime)} ago` : "never",
      age(c.metadata.creationTimestamp), actions("batch/v1", "cronjobs", c.metadata, { canScale: false, canRestart: false })] },
];

function duration(j) {
  const start = Date.parse(j.status?.startTime || "");
  if (!start) return "";
  const end = Date.parse(j.status?.completionTime || "") || Date.now();
  return `${Math.round((end - start) / 1000)}s`;
}

export function render(root, ctx) {
  replace(root, h("h2", {}, "Workloads", h("span", { class: "muted" }, ctx.namespace ? ` in ${ctx.namespace}` : " in all namespaces")));
  const redraws = [];
  const watches = KINDS.map((kind) => {
    const box = h("section", { id: kind.resource });
    root.append(box);
    // Rows are redrawn from the watch; an input being edited (a replica count) is kept as typed.
    const lw = new ListWatch(collection(kind.gv, kind.resource, ctx.namespace), {
      onChange: () => draw(), onError: () => draw() });
    const draw = throttled(() => {
      if (box.contains(document.activeElement) && document.activeElement.tagName === "INPUT") {
        setTimeout(draw, 500);
        return;
      }
      const items = lw.list().sort((a, b) => (a.metadata.namespace + a.metadata.name).localeCompare(b.metadata.namespace + b.metadata.name));
      replace(box, h("h3", {}, kind.title), errorBox(lw.error), table(kind.columns,
        items.map((o) => row(`${o.metadata.namespace}/${o.metadata.name}`, kind.cells(o), { dataset: kind.data ? kind.data(o) : {} })),
        { empty: lw.synced ? "none" : "loading…" }));
    });
    redraws.push(draw);
    return lw;
  });
  const set = new WatchSet(watches).start();
  const ages = setInterval(() => redraws.forEach((d) => d()), AGE_REFRESH_MS);   // ages move without events
  return () => { clearInterval(ages); set.stop(); };
}
