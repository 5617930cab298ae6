#!/usr/bin/env bash
# A worker VM, after vagrant/common.sh (as root): trust the cluster CA, join
# with the bootstrap token the control plane published, and run the kubelet,
# proxy, network-policy agent and DNS under systemd on the private address
# (the add-ons each on its own kubeconfig the control plane published).
#
# The control plane's files come through the synced folder's .kube/
# (bootstrap-token, ca.crt, proxy.kubeconfig, netpol.kubeconfig, dns.kubeconfig). With a shared folder (NFS, 9p, virtiofs,
# vboxsf) they appear as soon as vagrant/controlplane.sh writes them; with
# rsync (the default) the Vagrantfile copies them from the control plane to
# the host after it is up, and `vagrant up` of this VM pushes them here.
# A worker that already joined keeps its own credentials and does not need them
# (a reboot or `vagrant reload` never joins again). The token expires (24 h):
# a worker first brought up later needs a fresh one (see vagrant/README.md).
# Safe to run again.
set -euo pipefail
# shellcheck source=vagrant/lib.sh
. "${KUBEPY_SRC:-/vagrant}/vagrant/lib.sh"
require_root
load_env_file
[ "${NODE_ROLE:-}" = worker ] || die "$ENV_FILE says NODE_ROLE=${NODE_ROLE:-?}, not worker"

have_join_files() {
  local name
  if [ ! -s "$SHARED_DIR/bootstrap-token" ] || [ ! -s "$SHARED_DIR/ca.crt" ]; then return 1; fi
  for name in "${ADDON_KUBECONFIGS[@]}"; do [ -s "$SHARED_DIR/$name.kubeconfig" ] || return 1; done
}

if ! have_join_files && { [ ! -s "$ETC/ca.crt" ] || [ ! -s "$BOOTSTRAP_TOKEN_FILE" ]; }; then
  if mountpoint -q "$KUBEPY_SRC"; then
    # A shared folder: the control plane may still be provisioning (vagrant up --parallel).
    log "wait for the control plane to publish $SHARED_DIR/bootstrap-token, ca.crt and the add-ons' kubeconfigs"
    wait_for "$WAIT" "$SHARED_DIR/bootstrap-token, ca.crt and the add-ons' kubeconfigs" have_join_files
  else
    die "$SHARED_DIR lacks bootstrap-token, ca.crt or the add-ons' kubeconfigs and $KUBEPY_SRC is an rsync copy: bring the control plane up first (vagrant up controlplane), then vagrant reload --provision $NODE_NAME"
  fi
fi
if have_join_files; then
  token=$(tr -d ' \r\n' <"$SHARED_DIR/bootstrap-token")
  [[ $token =~ ^[a-z0-9]{6}\.[a-z0-9]{16}$ ]] || die "$SHARED_DIR/bootstrap-token does not hold a bootstrap token"
  write_file "$ETC/ca.crt" 0644 <"$SHARED_DIR/ca.crt" && touch "$RESTART_MARK"
  write_bootstrap_token "$token"
  install_addon_kubeconfigs "$SHARED_DIR"
fi
for name in "${ADDON_KUBECONFIGS[@]}"; do
  # A worker that joined before the add-ons had identities of their own: the control plane publishes them now.
  [ -s "$ETC/$name.kubeconfig" ] || die "no $ETC/$name.kubeconfig and none in $SHARED_DIR: vagrant provision controlplane, then vagrant provision $NODE_NAME"
done

# /readyz answers without credentials; this checks the address, the port and the CA at once.
# API_SERVER lists every API server (several control planes): one ready is enough to join.
api_ready() {
  "$VENV/bin/python" -c 'import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
for server in sys.argv[1].split(","):
    try:
        with urllib.request.urlopen(server + "/readyz", context=ctx, timeout=5) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
sys.exit(1)' "$API_SERVER" "$ETC/ca.crt"
}
log "wait for the API server at $API_SERVER"
wait_for "$WAIT" "the API server at $API_SERVER (with $ETC/ca.crt)" api_ready

ensure_service kubepy-kubelet
wait_kubelet_joined
ensure_service kubepy-proxy
ensure_service kubepy-netpol
ensure_service kubepy-dns

# kube-dns lists every registered node's DNS server; add this one. The admin
# kubeconfig is in the synced folder when the control plane published it there.
if [ -s "$SHARED_DIR/admin.kubeconfig" ]; then
  wait_for "$WAIT" "node $NODE_NAME to register" "$KUBECTL" --kubeconfig "$SHARED_DIR/admin.kubeconfig" get node "$NODE_NAME"
  log "publish kube-dns with this node's DNS server"
  publish_kube_dns "$SHARED_DIR/admin.kubeconfig"
else
  warn "no $SHARED_DIR/admin.kubeconfig: kube-dns does not list $NODE_NAME yet (vagrant provision controlplane adds it)"
fi

rm -f "$RESTART_MARK"
log "worker $NODE_NAME joined"
