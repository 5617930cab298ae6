// Where a rollout stands, in kubectl rollout status's words, from the object's status alone.

function cond(obj, type) {
  return (obj.status?.conditions || []).find((c) => c.type === type);
}

// -> { state: "complete" | "progressing" | "failed" | "paused", text }
export function deploymentRollout(d) {
  const spec = d.spec || {}, st = d.status || {};
  const want = spec.replicas ?? 1;
  if (spec.paused) return { state: "paused", text: "paused" };
  if ((st.observedGeneration || 0) < (d.metadata.generation || 0)) {
    return { state: "progressing", text: "waiting for the deployment spec update to be observed" };
  }
  const progressing = cond(d, "Progressing");
  if (progressing && progressing.reason === "ProgressDeadlineExceeded") {
    return { state: "failed", text: `exceeded its progress deadline` };
  }
  const updated = st.updatedReplicas || 0, total = st.replicas || 0, available = st.availableReplicas || 0;
  if (updated < want) return { state: "progressing", text: `${updated} of ${want} new replicas updated` };
  if (total > updated) return { state: "progressing", text: `${total - updated} old replicas pending termination` };
  if (available < updated) return { state: "progressing", text: `${available} of ${updated} updated replicas available` };
  return { state: "complete", text: "successfully rolled out" };
}

export function statefulSetRollout(s) {
  const spec = s.spec || {}, st = s.status || {};
  const want = spec.replicas ?? 1;
  if ((st.observedGeneration || 0) < (s.metadata.generation || 0)) {
    return { state: "progressing", text: "waiting for the statefulset spec update to be observed" };
  }
  if ((st.readyReplicas || 0) < want) return { state: "progressing", text: `${st.readyReplicas || 0} of ${want} pods ready` };
  if (spec.updateStrategy?.type !== "OnDelete" && st.updateRevision && st.currentRevision !== st.updateRevision) {
    return { state: "progressing", text: `${st.updatedReplicas || 0} of ${want} pods at revision ${st.updateRevision}` };
  }
  return { state: "complete", text: "rolled out" };
}

export function daemonSetRollout(ds) {
  const st = ds.status || {};
  if ((st.observedGeneration || 0) < (ds.metadata.generation || 0)) {
    return { state: "progressing", text: "waiting for the daemon set spec update to be observed" };
  }
  const want = st.desiredNumberScheduled || 0;
  if ((st.updatedNumberScheduled || 0) < want) {
    return { state: "progressing", text: `${st.updatedNumberScheduled || 0} of ${want} updated pods scheduled` };
  }
  if ((st.numberAvailable || 0) < want) return { state: "progressing", text: `${st.numberAvailable || 0} of ${want} updated pods available` };
  return { state: "complete", text: "successfully rolled out" };
}

export function jobState(j) {
  const c = (j.status?.conditions || []).find((x) => ["Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"].includes(x.type) && x.status === "True");
  if (c) return { state: c.type === "Complete" || c.type === "SuccessCriteriaMet" ? "complete" : "failed", text: c.type === "Failed" ? `Failed: ${c.reason || ""}` : c.type };
  if (j.spec?.suspend) return { state: "paused", text: "suspended" };
  return { state: "progressing", text: `${j.status?.active || 0} active, ${j.status?.succeeded || 0} succeeded` };
}
