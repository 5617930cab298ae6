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

// One kind's objects, kept current: listed, then changed by watch events. The watching is done
// by a WatchSet, which carries every watch of a view in one connection (a browser opens at most
// six to one server; a view watching seven kinds would otherwise wait, and so would its actions).
export class ListWatch {
  constructor(path, { query = {}, onChange = () => {}, onError = () => {} } = {}) {
    this.path = path;
    this.query = query;
    this.items = new Map();
    this.onChange = onChange;
    this.onError = onError;
    this.synced = false;
    this.error = null;
    this.needsList = true;
    this.dead = false;      // refused (401/403/404): retrying cannot help; the view shows why
    this.own = null;
  }

  static key(obj) {
    return `${obj.metadata.namespace || ""}/${obj.metadata.name}`;
  }

  list() { return [...this.items.values()]; }

  // Alone: a set of one. In a view with several, new WatchSet([a, b, …]).start() instead.
  start() {
    this.own = new WatchSet([this]).start();
    return this;
  }

  stop() { if (this.own) this.own.stop(); }

  setError(err) {
    this.error = err;
    this.onError(err);
  }

  async relist(signal) {
    try {
      const list = await get(this.path, this.query, signal);
      this.items = new Map((list.items || []).map((o) => [ListWatch.key(o), o]));
      this.rv = list.metadata.resourceVersion;
      this.synced = true;
      this.needsList = false;
      if (this.error) this.setError(null);
      this.onChange({ type: "SYNC" });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      this.setError(err);
      if ([401, 403, 404].includes(err.status)) this.dead = true;
      else throw err;
    }
  }

  watchTarget() {
    return url(this.path, { ...this.query, resourceVersion: this.rv, allowWatchBookmarks: "true", timeoutSeconds: "290" });
  }

  // -> "relist" when the store no longer has our resourceVersion (410 Gone)
  handle(event) {
    if (event.type === "ERROR") {
      if (event.object && event.object.code === 410) return "relist";
      throw new ApiError(event.object?.code || 500, event.object);
    }
    const obj = event.object;
    if (obj?.metadata?.resourceVersion) this.rv = obj.metadata.resourceVersion;
    if (event.type === "BOOKMARK") return null;
    const key = ListWatch.key(obj);
    if (event.type === "DELETED") this.items.delete(key);
    else this.items.set(key, obj);
    this.onChange({ type: event.type, object: obj, at: Date.now() });
    return null;
  }
}

// List each kind (again after a 410), then watch them all in one stream from the dashboard
// (GET /dashboard/watch?w=…&w=…); when any watch ends, every one resumes from where it was.
export class WatchSet {
  constructor(members) {
    this.members = members;
    for (const m of members) m.own = this;
    this.stopped = false;
    this.controller = new AbortController();
  }

  start() {
    this.run().catch(() => {});
    return this;
  }

  stop() {
    this.stopped = true;
    this.controller.abort();
  }

  async run() {
    let backoff = 1000;
    while (!this.stopped) {
      try {
        await Promise.all(this.members.filter((m) => m.needsList && !m.dead).map((m) => m.relist(this.controller.signal)));
        const live = this.members.filter((m) => !m.dead);
        if (!live.length) return;
        const query = live.map((m) => "w=" + encodeURIComponent(m.watchTarget())).join("&");
        const resp = await fetch(`/dashboard/watch?${query}`, { headers: headers(), signal: this.controller.signal });
        if (!resp.ok) throw await failure(resp);
        for (const m of live) if (m.error) m.setError(null);
        let heard = false;
        for await (const line of lines(resp)) {
          heard = true;
          const msg = JSON.parse(line);
          const m = live[msg.i];
          if (msg.event) {
            if (m.handle(msg.event) === "relist") { m.needsList = true; break; }
            backoff = 1000;
          } else if (msg.error) {
            m.setError(new ApiError(msg.code, msg.error));
            if ([401, 403, 404].includes(msg.code)) m.dead = true;
            else if (msg.code === 410) m.needsList = true;
            else throw m.error;
            break;
          } else if (msg.end) {
            break;
          }
        }
        // Leaving the loop closes the stream (the generator cancels its reader): every watch stops upstream.
        if (!heard) {   // a stream that ends at once must not become a tight loop
          await sleep(backoff);
          backoff = Math.min(backoff * 2, 30000);
        }
      } catch (err) {
        if (this.stopped) return;
        for (const m of this.members) if (!m.dead && !m.error) m.setError(err);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 30000);
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
