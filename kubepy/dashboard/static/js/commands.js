// The Linux commands that show a step for real on the node. The names are kubepy's own:
//   pod netns      kp-<namespace>-<name>-<uid8>              (kubepy.kubelet.network.pod_netns_name)
//   containerd     namespace "kubepy", labels io.kubernetes.pod.name / io.kubernetes.container.name /
//                  io.kubepy.container.kind                  (kubepy.kubelet.pods)
//   Service chain  KUBE-SVC-<base32(sha256("ns/name:port" + "tcp"))[:16]>   (kubepy.proxy.rules, as kube-proxy)
// Where a node's parts are on the host comes from its annotations, which `kubepy up` writes as
// kubeadm records a node's CRI socket: kubeadm.alpha.kubernetes.io/cri-socket and kubepy.io/netns
// (the lab node's network namespace). Without them (a VM) the commands are run on the node itself.

export const CRI_SOCKET_ANNOTATION = "kubeadm.alpha.kubernetes.io/cri-socket";
export const NETNS_ANNOTATION = "kubepy.io/netns";
const NETNS_NAME_MAX = 63;

function annotations(node) {
  return (node && node.metadata && node.metadata.annotations) || {};
}

// "ip netns exec <node> CMD" in a lab, CMD alone on a real node.
export function onNode(node, cmd) {
  const netns = annotations(node)[NETNS_ANNOTATION];
  return netns ? `ip netns exec ${netns} ${cmd}` : cmd;
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

// kube-proxy's chain suffix for a Service port: sha256 → base32 → first 16 characters.
export async function portProtoHash(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return base32(new Uint8Array(digest)).slice(0, 16);
}

export async function serviceChain(namespace, name, port) {
  const key = `${namespace}/${name}${port.name ? ":" + port.name : ""}`;
  return "KUBE-SVC-" + await portProtoHash(key + (port.protocol || "TCP").toLowerCase());
}
