// The shell: log in with a bearer token, then one view at a time by the URL's #fragment.
// Each view's render(root, ctx) returns a function that stops its watches.

import { ListWatch, request, session } from "./api.js";
import { h, replace } from "./dom.js";
import * as apply from "./apply.js";
import * as architecture from "./architecture.js";
import * as events from "./events.js";
import * as namespaces from "./namespaces.js";
import * as overview from "./overview.js";
import * as pod from "./pod.js";
import * as pods from "./pods.js";
import * as services from "./services.js";
import * as workloads from "./workloads.js";

const VIEWS = { overview, namespaces, workloads, pods, pod, services, events, apply, architecture };
const NS_KEY = "kubepy-dashboard-namespace";
const $ = (id) => document.getElementById(id);

const ctx = {
  namespace: sessionStorage.getItem(NS_KEY) || "",
  user: null,
  go: (hash) => { location.hash = hash; },
};

let stopView = () => {};
let stopNamespaces = () => {};

async function whoAmI() {
  const review = await request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {
    body: { apiVersion: "authentication.k8s.io/v1", kind: "SelfSubjectReview" } });
  return review.status.userInfo;
}

function showLogin(message) {
  stopView();
  stopNamespaces();
  $("shell").hidden = true;
  $("login").hidden = false;
  const err = $("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("token").focus();
}

async function enter() {
  try {
    ctx.user = await whoAmI();
  } catch (e) {
    session.token = null;
    showLogin(e.status === 401 ? "The API server refused this token (401 Unauthorized)." : `Cannot log in: ${e.message}`);
    return;
  }
  $("login").hidden = true;
  $("shell").hidden = false;
  const groups = (ctx.user.groups || []).filter((g) => g !== "system:authenticated");
  $("whoami").textContent = ctx.user.username + (groups.length ? ` (${groups.join(", ")})` : "");
  $("whoami").title = `logged in as ${ctx.user.username}; groups: ${(ctx.user.groups || []).join(", ")}`;
  watchNamespaces();
  route();
}

function watchNamespaces() {
  const input = $("namespace");
  input.value = ctx.namespace;
  const lw = new ListWatch("/api/v1/namespaces", {
    onChange: () => replace($("namespaces"), lw.list().map((n) => h("option", { value: n.metadata.name }))),
    onError: (e) => { input.title = e ? `cannot list namespaces: ${e.message}` : ""; },
  }).start();
  stopNamespaces = () => lw.stop();
}

function route() {
  stopView();
  const [name, ...args] = (location.hash.replace(/^#\/?/, "") || "overview").split("/").map(decodeURIComponent);
  const view = VIEWS[name] || overview;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === `#/${name === "pod" ? "pods" : name}`);
  }
  const root = $("view");
  replace(root);
  root.dataset.view = name;
  stopView = view.render(root, { ...ctx, args }) || (() => {});
}

function start() {
  session.onUnauthorized = () => {
    session.token = null;
    showLogin("The API server refused the token (401 Unauthorized): log in again.");
  };
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    session.token = token;
    $("token").value = "";
    enter();
  });
  $("logout").addEventListener("click", () => {
    session.token = null;
    showLogin("");
  });
  $("namespace").addEventListener("change", () => {
    ctx.namespace = $("namespace").value.trim();
    sessionStorage.setItem(NS_KEY, ctx.namespace);
    route();
  });
  window.addEventListener("hashchange", () => { if (session.token) route(); });
  if (session.token) enter();
  else showLogin("");
}

start();
