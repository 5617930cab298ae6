// The actions the views offer, each one request as the user: scale, restart a rollout, delete.

import { objectPath, request } from "./api.js";
import { notify, notifyError } from "./dom.js";

export async function scale(gv, resource, ns, name, replicas) {
  try {
    await request("PATCH", objectPath(gv, resource, ns, name, "scale"), {
      body: { spec: { replicas } }, contentType: "application/merge-patch+json" });
    notify(`${resource}/${name} scaled to ${replicas}`);
  } catch (e) {
    notifyError(`scale ${resource}/${name}`, e);
  }
}

// As kubectl rollout restart: a new annotation on the pod template starts a new rollout.
export async function restart(gv, resource, ns, name) {
  const body = { spec: { template: { metadata: { annotations: {
    "kubectl.kubernetes.io/restartedAt": new Date().toISOString() } } } } };
  try {
    await request("PATCH", objectPath(gv, resource, ns, name), { body,
      contentType: "application/strategic-merge-patch+json", query: { fieldManager: "kubepy-dashboard" } });
    notify(`${resource}/${name} restarted`);
  } catch (e) {
    notifyError(`restart ${resource}/${name}`, e);
  }
}

export async function remove(gv, resource, ns, name) {
  if (!window.confirm(`Delete ${resource}/${name}${ns ? ` in ${ns}` : ""}?`)) return;
  try {
    await request("DELETE", objectPath(gv, resource, ns, name), {
      body: { kind: "DeleteOptions", apiVersion: "v1", propagationPolicy: "Background" } });
    notify(`${resource}/${name} deleted`);
  } catch (e) {
    notifyError(`delete ${resource}/${name}`, e);
  }
}
