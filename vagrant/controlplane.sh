#!/usr/bin/env bash
# The control-plane VM, after vagrant/common.sh (as root):
#   1. kubepy-controlplane (API server, scheduler, controller manager) on the
#      private address; on its first start it makes its CA, serving
#      certificate (with the private address as a SAN), tokens.csv (the admin
#      token) and admin.kubeconfig in /var/lib/kubepy/controlplane (0700), and
#      the scheduler's and controller manager's own kubeconfigs beside it
#      (scheduler.kubeconfig, controller-manager.kubeconfig: client certificates
#      for system:kube-scheduler and system:kube-controller-manager) and the node
#      add-ons' (proxy.kubeconfig: system:kube-proxy; netpol.kubeconfig:
#      system:kubepy-netpol; dns.kubeconfig: system:kubepy-dns); only
#      admin.kubeconfig is system:masters, and it never leaves for a component;
#   2. publishes what the host and the workers need, in
#      /var/lib/kubepy/publish (0700) and the synced folder's .kube/:
#        admin.kubeconfig  (server: https://<private address>:6443)
#        bootstrap-token   (workers' kubelets join with it; `kubepy token create
#                          --ttl 24h`, replaced by a fresh one when this script
#                          runs and the published one is older than 12 h)
#        ca.crt            (the cluster CA the workers trust)
#        proxy.kubeconfig, netpol.kubeconfig, dns.kubeconfig
#                          (the add-ons' identities; every node runs them on
#                          its copy in /etc/kubepy, 0600)
#      With an rsync synced folder the Vagrantfile copies these to the host
#      after this VM is up, and the next `vagrant up` pushes them to the workers;
#   3. its own kubelet, proxy, network-policy agent and DNS (each add-on on
#      its own kubeconfig, never the kubelet's or the admin's); the node-role.kubernetes.io/control-plane
#      label and taint, set with kubectl once the node exists (NodeRestriction keeps
#      a kubelet from labelling itself so, and it has no --register-with-taints).
#      The proxy's host-gw routes (every other node's podCIDR via its private
#      address) are also how the API server reaches pod IPs: admission webhooks
#      running as pods are called from the private (advertised) address;
#   4. the kube-dns Service and Endpoints (every registered node's DNS server).
# Safe to run again.
set -euo pipefail
# shellcheck source=vagrant/lib.sh
. "${KUBEPY_SRC:-/vagrant}/vagrant/lib.sh"
require_root
load_env_file
[ "${NODE_ROLE:-}" = controlplane ] || die "$ENV_FILE says NODE_ROLE=${NODE_ROLE:-?}, not controlplane"
[ "$CONTROLPLANE_IP" = "$NODE_IP" ] || die "this VM's private address $NODE_IP is not the control plane's ($CONTROLPLANE_IP)"
ADMIN=$CP_DIR/admin.kubeconfig
kc() { "$KUBECTL" --kubeconfig "$ADMIN" "$@"; }

# -- 1. the control plane ---------------------------------------------------------------
ensure_service kubepy-controlplane
log "wait for the API server at https://$NODE_IP:$API_PORT"
deadline=$((SECONDS + WAIT))
until [ -s "$ADMIN" ] && kc get --raw=/readyz >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    journal_tail kubepy-controlplane >&2
    die "the API server is not ready after ${WAIT}s (journalctl -u kubepy-controlplane)"
  fi
  sleep 2
done
# The serving certificate must name the private address (the API server re-issues it when a SAN is missing).
if ! cert_ips=$("$VENV/bin/python" - "$CP_DIR/apiserver.crt" <<'EOF'
import sys
from cryptography import x509
cert = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
print(" ".join(str(ip) for ip in san.get_values_for_type(x509.IPAddress)))
EOF
); then
  warn "could not read the serving certificate's addresses"
elif ! grep -qwF -- "$NODE_IP" <<<"$cert_ips"; then
  die "the API server's certificate does not name $NODE_IP (it has: $cert_ips)"
fi

# -- 2. what the host and the workers need ---------------------------------------------------
# The bootstrap token expires (TOKEN_TTL). The published one is kept while it is younger than
# TOKEN_REUSE_MINUTES (so it has hours left: `vagrant up` of every VM takes ~15 min) and the API
# server still has it; otherwise a fresh one replaces it, so `vagrant provision controlplane`
# before adding a worker a day later hands that worker a valid token.
published_token=$PUBLISH_DIR/bootstrap-token
token=""
if [ -s "$published_token" ] && [ -n "$(find "$published_token" -mmin "-$TOKEN_REUSE_MINUTES")" ]; then
  token=$(tr -d ' \n' <"$published_token")
  if ! [[ $token =~ ^[a-z0-9]{6}\.[a-z0-9]{16}$ ]] || ! kc -n kube-system get secret "bootstrap-token-${token%%.*}" >/dev/null 2>&1; then
    token=""
  fi
fi
# Three tries: an API server that has just become ready on a starved VM may not finish a TLS handshake
# within the client's 10 s connect timeout while the other control-plane daemons start.
for attempt in 1 2 3; do
  [ -z "$token" ] || break
  if token=$("$KUBEPY" token create --data-dir "$CP_DIR" --ttl "$TOKEN_TTL" --description "published by vagrant/controlplane.sh"); then
    log "created a bootstrap token valid for $TOKEN_TTL"
  elif [ "$attempt" = 3 ]; then
    die "kubepy token create failed"
  else
    warn "kubepy token create failed (try $attempt of 3); again in 5 s"
    token=""
    sleep 5
  fi
done
server="https://$NODE_IP:$API_PORT"
admin_for_host=$("$VENV/bin/python" - "$ADMIN" "$server" <<'EOF'
import sys
import yaml
path, server = sys.argv[1:]
config = yaml.safe_load(open(path))
for cluster in config.get("clusters") or []:
    cluster["cluster"]["server"] = server
print(yaml.safe_dump(config, default_flow_style=False), end="")
EOF
)
write_file "$ETC/ca.crt" 0644 <"$CP_DIR/ca.crt" && touch "$RESTART_MARK"
write_bootstrap_token "$token"
mkdir -p "$PUBLISH_DIR"
chmod 0700 "$PUBLISH_DIR"
write_file "$PUBLISH_DIR/admin.kubeconfig" 0600 <<<"$admin_for_host" || true
write_file "$PUBLISH_DIR/bootstrap-token" 0600 <<<"$token" || true
write_file "$PUBLISH_DIR/ca.crt" 0644 <"$CP_DIR/ca.crt" || true
addon_files=()
for name in "${ADDON_KUBECONFIGS[@]}"; do
  write_file "$PUBLISH_DIR/$name.kubeconfig" 0600 <"$CP_DIR/$name.kubeconfig" || true
  addon_files+=("$name.kubeconfig")
done
if mkdir -p "$SHARED_DIR" 2>/dev/null && [ -w "$SHARED_DIR" ]; then
  # The add-ons' kubeconfigs before the bootstrap token: a worker that sees the token finds them too.
  for f in "${addon_files[@]}" admin.kubeconfig bootstrap-token ca.crt; do
    # Synced folders may not keep modes (vboxsf, 9p): the copies' modes are best effort.
    if ! cmp -s "$PUBLISH_DIR/$f" "$SHARED_DIR/$f"; then
      cp "$PUBLISH_DIR/$f" "$SHARED_DIR/$f"
      chmod "$(stat -c %a "$PUBLISH_DIR/$f")" "$SHARED_DIR/$f" 2>/dev/null || true
      log "published $SHARED_DIR/$f"
    fi
  done
else
  warn "$SHARED_DIR is not writable; the host gets the files through the Vagrantfile's trigger"
fi

# -- 3. this VM as a node too: kubelet, proxy, DNS; the control-plane taint ----------------------------
install_addon_kubeconfigs "$CP_DIR"
ensure_service kubepy-kubelet
wait_kubelet_joined
ensure_service kubepy-proxy
ensure_service kubepy-netpol
ensure_service kubepy-dns
ensure_service kubepy-ingress
# Gateway API on the ingress controller's nginx, as `kubepy up` installs it: the CRDs, then (once they are
# served) the GatewayClass kubepy (controller kubepy.io/gateway). Both ship inside the kubepy package.
gatewayapi=$("$VENV/bin/python" -c 'import pathlib, kubepy.ingress; print(pathlib.Path(kubepy.ingress.__file__).parent / "gatewayapi")')
log "install Gateway API CRDs and GatewayClass kubepy ($gatewayapi)"
# --validate=false: kubepy's own manifests; kubectl's validation would fetch the OpenAPI documents,
# which the API server rebuilds after each CRD (about a minute of CPU on an emulated VM).
kc apply --validate=false -f "$gatewayapi/crds.yaml" >/dev/null
# $WAIT, not a minute: on an emulated VM whose daemons are all still starting, Established has come
# later than 60 s (CI, 2026-12-07: the API server's loop lagged 35 s and the wait killed the provisioning).
kc wait --for=condition=Established --timeout="${WAIT}s" -f "$gatewayapi/crds.yaml" >/dev/null
kc apply --validate=false -f "$gatewayapi/gatewayclass.yaml" >/dev/null
log "wait for node $NODE_NAME to register"
wait_for "$WAIT" "node $NODE_NAME to register" kc get node "$NODE_NAME"
taints=$(kc get node "$NODE_NAME" -o 'jsonpath={range .spec.taints[*]}{.key}:{.effect}{"\n"}{end}')
if ! grep -qxF "$CONTROLPLANE_TAINT" <<<"$taints"; then
  log "taint $NODE_NAME $CONTROLPLANE_TAINT"
  kc taint node "$NODE_NAME" "$CONTROLPLANE_TAINT" --overwrite
fi
# The admin labels it, as kubeadm does: NodeRestriction keeps a kubelet from giving itself node-role labels.
kc label node "$NODE_NAME" "$CONTROLPLANE_LABEL" --overwrite >/dev/null

# -- 4. cluster DNS -----------------------------------------------------------------------------
log "publish kube-dns (10.96.0.10)"
publish_kube_dns "$ADMIN"

rm -f "$RESTART_MARK"
log "control plane ready: KUBECONFIG=.kube/admin.kubeconfig kubectl get nodes -o wide (on the host)"
