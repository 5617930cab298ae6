// Namespaces: phase and age; choosing one narrows every other view to it.

import { ListWatch } from "./api.js";
import { remove } from "./actions.js";
import { AGE_REFRESH_MS, age, errorBox, h, pill, replace, row, table, throttled } from "./dom.js";

export function render(root) {
  const errors = h("div");
  const box = h("div", { id: "namespace-list" });
  replace(root, h("h2", {}, "Namespaces"), errors, box);
  const lw = new ListWatch("/api/v1/namespaces", { onChange: () => draw(), onError: () => draw() });
  const draw = throttled(() => {
    replace(errors, errorBox(lw.error));
    const items = lw.list().sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    replace(box, table(["Name", "Status", "Age", ""], items.map((n) => row(n.metadata.name, [
      h("strong", {}, n.metadata.name),
      pill(n.status?.phase || "", n.status?.phase === "Active" ? "ok" : "warn"),
      age(n.metadata.creationTimestamp),
      h("span", { class: "actions" },
        h("button", { type: "button", onclick: () => choose(n.metadata.name) }, "Show"),
        h("button", { type: "button", class: "danger", onclick: () => remove("v1", "namespaces", "", n.metadata.name) }, "Delete")),
    ])), { empty: lw.synced ? "none visible" : "loading…" }));
  });
  lw.start();
  const ages = setInterval(draw, AGE_REFRESH_MS);   // ages move without events
  return () => { clearInterval(ages); lw.stop(); };
}

function choose(name) {
  const input = document.getElementById("namespace");
  input.value = name;
  input.dispatchEvent(new Event("change"));
  location.hash = "#/workloads";
}
