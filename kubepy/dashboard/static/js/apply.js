// Apply a pasted manifest: the dashboard's backend only splits the YAML into objects; each is then
// sent by the browser, as the user, with server-side apply (as kubectl apply --server-side).

import { ApiError, objectPath, request, resourceFor, session } from "./api.js";
import { h, replace } from "./dom.js";

const FIELD_MANAGER = "kubepy-dashboard";

async function split(text) {
  const resp = await fetch("/dashboard/manifest", { method: "POST", body: text,
    headers: { "Content-Type": "application/yaml", Authorization: `Bearer ${session.token}` } });
  const body = await resp.json();
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

async function applyOne(obj, defaultNamespace, force) {
  const res = await resourceFor(obj.apiVersion, obj.kind);
  const ns = res.namespaced ? (obj.metadata.namespace || defaultNamespace || "default") : "";
  const path = objectPath(obj.apiVersion, res.name, ns, obj.metadata.name);
  const had = await request("GET", path).then(() => true, (e) => { if (e.status === 404) return false; throw e; });
  await request("PATCH", path, { body: obj, contentType: "application/apply-patch+yaml",
    query: { fieldManager: FIELD_MANAGER, force: force ? "true" : undefined } });
  const group = obj.apiVersion.includes("/") ? `.${obj.apiVersion.split("/")[0]}` : "";
  return `${obj.kind.toLowerCase()}${group}/${obj.metadata.name}${ns ? ` (${ns})` : ""} ${had ? "configured" : "created"}`;
}

export function render(root, ctx) {
  const text = h("textarea", { id: "manifest", rows: "22", spellcheck: "false",
    placeholder: "apiVersion: apps/v1\nkind: Deployment\n…   (several documents separated by ---)" });
  const force = h("input", { type: "checkbox", id: "force" });
  const results = h("ul", { id: "apply-results", class: "results" });
  const button = h("button", { type: "button", id: "apply-button" }, "Apply");
  button.addEventListener("click", async () => {
    button.disabled = true;
    replace(results);
    try {
      const objects = await split(text.value);
      for (const obj of objects) {
        try {
          results.append(h("li", { class: "ok" }, await applyOne(obj, ctx.namespace, force.checked)));
        } catch (e) {
          results.append(h("li", { class: "error" }, `${obj.kind}/${obj.metadata.name}: ${e.status || ""} ${e.reason || ""} ${e.message}`));
        }
      }
    } catch (e) {
      results.append(h("li", { class: "error" }, `${e.status || ""} ${e.message}`));
    } finally {
      button.disabled = false;
    }
  });
  replace(root, h("h2", {}, "Apply a manifest"),
    h("p", { class: "muted" }, "Server-side apply, field manager ", h("code", {}, FIELD_MANAGER),
      `; objects without a namespace go to ${ctx.namespace || "default"}.`),
    text, h("div", { class: "toolbar" }, button, h("label", {}, force, " force conflicts (take fields other managers own)")),
    results);
  return () => {};
}
