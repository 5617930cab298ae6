// Events as they happen, newest first: what every component said about every object.

import { ListWatch, collection } from "./api.js";
import { AGE_REFRESH_MS, age, errorBox, h, pill, replace, row, table, throttled } from "./dom.js";
import { evTime, lastSeen } from "./pod.js";

const SHOWN = 300;

export function render(root, ctx) {
  const errors = h("div");
  const box = h("div", { id: "event-list" });
  replace(root, h("h2", {}, "Events", h("span", { class: "muted" }, ctx.namespace ? ` in ${ctx.namespace}` : " in all namespaces")),
    errors, box);
  const lw = new ListWatch(collection("v1", "events", ctx.namespace), { onChange: () => draw(), onError: () => draw() });
  const draw = throttled(() => {
    replace(errors, errorBox(lw.error));
    const items = lw.list().sort((a, b) => evTime(b) - evTime(a)).slice(0, SHOWN);
    replace(box, table(["Last seen", "Type", "Reason", "Object", "From", "Message"], items.map((e) => {
      const o = e.involvedObject || {};
      return row(`${e.metadata.namespace}/${e.metadata.name}`, [
        age(lastSeen(e)), pill(e.type || "Normal", e.type === "Warning" ? "bad" : "ok"), e.reason || "",
        o.kind === "Pod" ? h("a", { href: `#/pod/${encodeURIComponent(o.namespace || "")}/${encodeURIComponent(o.name || "")}` }, `pod/${o.name}`)
          : `${(o.kind || "").toLowerCase()}/${o.name || ""}`,
        e.source?.component || e.reportingComponent || e.reportingController || "",
        `${e.message || ""}${e.count > 1 ? ` (×${e.count})` : ""}`]);
    }), { empty: lw.synced ? "no events" : "loading…" }));
  });
  lw.start();
  const ages = setInterval(draw, AGE_REFRESH_MS);   // ages move without events
  return () => { clearInterval(ages); lw.stop(); };
}
