// Kubernetes quantities ("250m", "1.5", "128Mi", "2G") as numbers, and back for people.

const SUFFIX = { n: 1e-9, u: 1e-6, m: 1e-3, "": 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };

export function parseQuantity(q) {
  if (q === undefined || q === null || q === "") return NaN;
  const m = /^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$/.exec(String(q).trim());
  if (!m || !(m[2] in SUFFIX)) return NaN;
  return parseFloat(m[1]) * SUFFIX[m[2]];
}

export function cores(q) {
  const v = parseQuantity(q);
  if (Number.isNaN(v)) return "";
  return v < 1 ? `${Math.round(v * 1000)}m` : `${+v.toFixed(2)}`;
}

export function bytes(q) {
  const v = parseQuantity(q);
  if (Number.isNaN(v)) return "";
  for (const [unit, size] of [["Gi", 2 ** 30], ["Mi", 2 ** 20], ["Ki", 2 ** 10]]) {
    if (v >= size) return `${+(v / size).toFixed(1)}${unit}`;
  }
  return `${v}`;
}

export function percent(part, whole) {
  const p = parseQuantity(part), w = parseQuantity(whole);
  if (Number.isNaN(p) || Number.isNaN(w) || w <= 0) return "";
  return `${Math.round((p / w) * 100)}%`;
}
