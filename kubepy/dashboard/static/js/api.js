// The API as the user may use it: every request carries the user's bearer token (kept in
// sessionStorage, gone with the tab) and goes through the dashboard to the API server, which
// authenticates it and applies RBAC. Lists stay current with watches, never by listing again.

const TOKEN_KEY = "kubepy-dashboard-token";

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  onUnauthorized: () => {},
};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.reason = (body && body.reason) || "";
    this.body = body;
  }
}

export function url(path, query = {}) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
  const q = params.toString();
  return q ? `${path}?${q}` : path;
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.token}`, Accept: "application/json", ...extra };
}

async function failure(resp) {
  const text = await resp.text();
  let body;
  try { body = JSON.parse(text); } catch { body = { message: text.trim() || resp.statusText }; }
  if (resp.status === 401) session.onUnauthorized(body);
  return new ApiError(resp.status, body);
}

export async function request(method, path, { query, body, contentType = "application/json", signal } = {}) {
  const init = { method, headers: headers(body !== undefined ? { "Content-Type": contentType } : {}), signal };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  const resp = await fetch(url(path, query), init);
  if (!resp.ok) throw await failure(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : {};
}

export const get = (path, query, signal) => request("GET", path, { query, signal });

// Where a kind's objects live: core kinds under /api/v1, the rest under /apis/GROUP/VERSION.
export function collection(gv, resource, namespace) {
  const base = gv === "v1" ? "/api/v1" : `/apis/${gv}`;
  return namespace ? `${base}/namespaces/${encodeURIComponent(namespace)}/${resource}` : `${base}/${resource}`;
}

export function objectPath(gv, resource, namespace, name, sub) {
  return `${collection(gv, resource, namespace)}/${encodeURIComponent(name)}${sub ? "/" + sub : ""}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function* lines(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line) yield line;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// List, then watch from the list's resourceVersion; a 410 Gone (the store compacted that far)
// lists again; an ended watch resumes from the last version seen. 401/403/404 stop it: retrying
// cannot help, and the view shows the API server's message.
export class ListWatch {
  constructor(path, { query = {}, onChange = () => {}, onError = () => {} } = {}) {
    this.path = path;
    this.query = query;
    this.items = new Map();
    this.onChange = onChange;
    this.onError = onError;
    this.controller = new AbortController();
    this.stopped = false;
    this.synced = false;
    this.error = null;
  }

  static key(obj) {
    return `${obj.metadata.namespace || ""}/${obj.metadata.name}`;
  }

  list() { return [...this.items.values()]; }

  stop() {
    this.stopped = true;
    this.controller.abort();
  }

  start() {
    this.run().catch(() => {});
    return this;
  }

  setError(err) {
    this.error = err;
    this.onError(err);
  }

  async run() {
    let backoff = 1000;
    while (!this.stopped) {
      try {
        const list = await get(this.path, this.query, this.controller.signal);
        this.items = new Map((list.items || []).map((o) => [ListWatch.key(o), o]));
        this.rv = list.metadata.resourceVersion;
        this.synced = true;
        if (this.error) this.setError(null);
        this.onChange({ type: "SYNC" });
        await this.watch();
        backoff = 1000;
      } catch (err) {
        if (this.stopped) return;
        this.setError(err);
        if ([401, 403, 404].includes(err.status)) return;
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 30000);
      }
    }
  }

  async watch() {
    while (!this.stopped) {
      const resp = await fetch(url(this.path, { ...this.query, watch: "1", resourceVersion: this.rv,
        allowWatchBookmarks: "true", timeoutSeconds: "290" }), { headers: headers(), signal: this.controller.signal });
      if (!resp.ok) throw await failure(resp);
      for await (const line of lines(resp)) {
        const event = JSON.parse(line);
        if (event.type === "ERROR") {
          if (event.object && event.object.code === 410) return;   // list again
          throw new ApiError(event.object?.code || 500, event.object);
        }
        const obj = event.object;
        if (obj?.metadata?.resourceVersion) this.rv = obj.metadata.resourceVersion;
        if (event.type === "BOOKMARK") continue;
        const key = ListWatch.key(obj);
        if (event.type === "DELETED") this.items.delete(key);
        else this.items.set(key, obj);
        this.onChange({ type: event.type, object: obj, at: Date.now() });
      }
    }
  }
}

// A pod's log as it is written (log?follow=true), in chunks of text.
export async function followLog(path, query, { signal, onText }) {
  const resp = await fetch(url(path, { ...query, follow: "true" }), { headers: headers({ Accept: "*/*" }), signal });
  if (!resp.ok) throw await failure(resp);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onText(decoder.decode(value, { stream: true }));
  }
}

// kind -> resource through discovery (for applying a pasted manifest), cached per group version.
const discovered = new Map();

export async function resourceFor(apiVersion, kind) {
  if (!discovered.has(apiVersion)) {
    const path = apiVersion.includes("/") ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    discovered.set(apiVersion, get(path).catch((e) => { discovered.delete(apiVersion); throw e; }));
  }
  const list = await discovered.get(apiVersion);
  const res = (list.resources || []).find((r) => r.kind === kind && !r.name.includes("/"));
  if (!res) throw new ApiError(404, { message: `the server has no ${kind} in ${apiVersion}` });
  return res;
}
