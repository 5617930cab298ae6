// The Linux commands that show a step for real on the node. The names are kubepy's own:
//   pod netns      kp-<namespace>-<name>-<uid8>              (kubepy.kubelet.network.pod_netns_name)
//   containerd     namespace "kubepy", labels io.kubernetes.pod.name / io.kubernetes.container.name /
//                  io.kubepy.container.kind                  (kubepy.kubelet.pods)
//   Service chain  KUBE-SVC-<base32(sha256("ns/name:port" + "tcp"))[:16]>   (kubepy.proxy.rules, as kube-proxy)
//                  nftables mode: service-<base32(sha256("ns/name/tcp/port"))[:8]>-ns/name/tcp/port
//                  in table ip kube-proxy (kubepy.proxy.nftables, as kube-proxy's nftables mode)
// Where a node's parts are on the host comes from its annotations, which `kubepy up` writes as
// kubeadm records a node's CRI socket: kubeadm.alpha.kubernetes.io/cri-socket and kubepy.io/netns
// (the lab node's network namespace). Without them (a VM) the commands are run on the node itself.
// kubepy.io/proxy-mode says which of kube-proxy's layouts a node's rules are in (none: iptables).

export const CRI_SOCKET_ANNOTATION = "kubeadm.alpha.kubernetes.io/cri-socket";
export const NETNS_ANNOTATION = "kubepy.io/netns";
export const PROXY_MODE_ANNOTATION = "kubepy.io/proxy-mode";
const NETNS_NAME_MAX = 63;

function annotations(node) {
  return (node && node.metadata && node.metadata.annotations) || {};
}

// "ip netns exec <node> CMD" in a lab, CMD alone on a real node.
export function onNode(node, cmd) {
  const netns = annotations(node)[NETNS_ANNOTATION];
  return netns ? `ip netns exec ${netns} ${cmd}` : cmd;
}

export function proxyMode(node) {
  return annotations(node)[PROXY_MODE_ANNOTATION] || "iptables";
}

export function ctr(node, args) {
  const socket = (annotations(node)[CRI_SOCKET_ANNOTATION] || "").replace(/^unix:\/\//, "");
  return `ctr ${socket ? `--address ${socket} ` : ""}-n kubepy ${args}`;
}

// containerd's filter syntax: quoted label keys, comma for "and".
export function labelFilter(labels) {
  return "'" + Object.entries(labels).map(([k, v]) => `labels."${k}"==${v}`).join(",") + "'";
}

export function podNetns(namespace, name, uid) {
  const tail = "-" + uid.replace(/[^0-9a-zA-Z]/g, "").slice(0, 8).toLowerCase();
  const middle = `${namespace}-${name}`.replace(/[^0-9a-zA-Z_.-]/g, "_");
  const room = NETNS_NAME_MAX - "kp-".length - tail.length;
  return "kp-" + middle.slice(0, room).replace(/[-.]+$/, "") + tail;
}

const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

export function base32(bytes) {
  let out = "", bits = 0, value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

// SHA-256 (FIPS 180-4) for when crypto.subtle is missing: browsers offer it only in a secure
// context, and a page whose certificate error was overridden may not count as one.
const K = Uint32Array.from([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
  0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
  0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
  0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
  0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
  0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
  0xc67178f2]);

export function sha256(data) {
  const len = data.length;
  const padded = new Uint8Array(((len + 9 + 63) >> 6) << 6);
  padded.set(data);
  padded[len] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(len / 0x20000000));
  view.setUint32(padded.length - 4, (len << 3) >>> 0);
  const hv = Uint32Array.from([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + i * 4);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, hh] = hv;
    for (let i = 0; i < 64; i++) {
      const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    [a, b, c, d, e, f, g, hh].forEach((x, i) => { hv[i] = (hv[i] + x) >>> 0; });
  }
  const out = new Uint8Array(32);
  const ov = new DataView(out.buffer);
  hv.forEach((x, i) => ov.setUint32(i * 4, x));
  return out;
}

// kube-proxy's chain suffix for a Service port: sha256 → base32 → first 16 characters.
export async function portProtoHash(text) {
  const data = new TextEncoder().encode(text);
  const digest = globalThis.crypto?.subtle ? new Uint8Array(await crypto.subtle.digest("SHA-256", data)) : sha256(data);
  return base32(digest).slice(0, 16);
}

export async function serviceChain(namespace, name, port) {
  const key = `${namespace}/${name}${port.name ? ":" + port.name : ""}`;
  return "KUBE-SVC-" + await portProtoHash(key + (port.protocol || "TCP").toLowerCase());
}

// nftables mode's chain of a Service port (upstream's hashAndTruncate of "ns/name/proto/portname").
export async function nftServiceChain(namespace, name, port) {
  const key = `${namespace}/${name}/${(port.protocol || "TCP").toLowerCase()}/${port.name || ""}`;
  const data = new TextEncoder().encode(key);
  const digest = globalThis.crypto?.subtle ? new Uint8Array(await crypto.subtle.digest("SHA-256", data)) : sha256(data);
  const full = `${base32(digest).slice(0, 8)}-${key}`;
  return "service-" + (full.length <= 240 ? full : full.slice(0, 237) + "...");
}
