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
#
# With several control planes (CONTROLPLANE_IPS lists more than one), first:
#   0. an etcd member (kubepy-etcd.service; certificates from the cluster CA by
#      `kubepy etcd certs`): the first control plane starts a one-member cluster,
#      each other one joins it (`etcdctl member add`, then the member starts with
#      ETCD_INITIAL_CLUSTER_STATE=existing) after copying the first one's CA,
#      service-account key and tokens from controlplane-join.tar.base64, which the
#      first publishes beside the bootstrap token; and keepalived's configuration for
#      API_VIP (the address the host's admin.kubeconfig and the add-ons use), held by
#      a control plane whose API server answers /readyz.
# Then the same steps, on every etcd member, with a leader-elected scheduler and
# controller manager (common.sh's CONTROLPLANE_EXTRA_ARGS); only the first publishes
# and runs the ingress controller.
# Safe to run again.
set -euo pipefail
# shellcheck source=vagrant/lib.sh
. "${KUBEPY_SRC:-/vagrant}/vagrant/lib.sh"
require_root
load_env_file
[ "${NODE_ROLE:-}" = controlplane ] || die "$ENV_FILE says NODE_ROLE=${NODE_ROLE:-?}, not controlplane"
IFS=, read -r -a cp_ips <<<"${CONTROLPLANE_IPS:-$CONTROLPLANE_IP}"
[[ " ${cp_ips[*]} " == *" $NODE_IP "* ]] || die "this VM's private address $NODE_IP is not a control plane's (${cp_ips[*]})"
first=false
[ "$CONTROLPLANE_IP" != "$NODE_IP" ] || first=true
ha=false
[ "${#cp_ips[@]}" -eq 1 ] || ha=true
ADMIN=$CP_DIR/admin.kubeconfig
kc() { "$KUBECTL" --kubeconfig "$ADMIN" "$@"; }

# -- 0. several control planes: the etcd member, the API's virtual address --------------------
if $ha; then
  mkdir -p "$CP_DIR"
  chmod 0700 "$CP_DIR"
  if $first; then
    # The cluster CA now: the etcd member's certificates come before the API server that would make it.
    "$VENV/bin/python" -c 'import sys; from pathlib import Path; from kubepy.api.certs import ensure_ca
ensure_ca(Path(sys.argv[1]))' "$CP_DIR"
  elif [ ! -s "$CP_DIR/ca.key" ]; then
    bundle=$SHARED_DIR/$JOIN_BUNDLE
    [ -s "$bundle" ] || die "no $bundle: bring the first control plane up first (vagrant up controlplane), then this one"
    log "join the control plane: ${JOIN_FILES[*]} from $bundle"
    base64 -d <"$bundle" | tar -x -C "$CP_DIR" --no-same-owner --skip-old-files
    for f in ca.crt ca.key sa.key tokens.csv; do [ -s "$CP_DIR/$f" ] || die "$bundle has no $f"; done
  fi
  if [ ! -s "$ETCD_PKI/server.crt" ]; then
    log "etcd member certificates in $ETCD_PKI (signed by the cluster CA)"
    "$KUBEPY" etcd certs --data-dir "$CP_DIR" --name "$NODE_NAME" --ip "$NODE_IP" --out "$ETCD_PKI" >/dev/null
  fi
  chmod 0700 "$ETCD_DIR" "$ETCD_PKI"
  etcdctl_on() {   # etcdctl_on ENDPOINTS ARGS...: as the API server's etcd client
    local endpoints=$1
    shift
    ETCDCTL_API=3 etcdctl --cacert "$ETCD_PKI/ca.crt" --cert "$ETCD_PKI/apiserver-etcd-client.crt" \
      --key "$ETCD_PKI/apiserver-etcd-client.key" --endpoints "$endpoints" --dial-timeout 10s --command-timeout 30s "$@"
  }
  peer_url="https://$NODE_IP:$ETCD_PEER_PORT"
  if [ ! -d "$ETCD_DIR/data/member" ]; then
    if $first; then
      initial="$NODE_NAME=$peer_url"
      state=new
    else
      others=""
      for ip in "${cp_ips[@]}"; do [ "$ip" = "$NODE_IP" ] || others+="${others:+,}https://$ip:$ETCD_CLIENT_PORT"; done
      # One member joins at a time (etcd refuses to add one while another added one has not started):
      # control planes brought up side by side (`vagrant up` in parallel) take turns here.
      deadline=$((SECONDS + WAIT))
      while :; do
        [ "$SECONDS" -lt "$deadline" ] || die "could not add this etcd member at $others in ${WAIT}s"
        if ! members=$(etcdctl_on "$others" member list); then
          warn "cannot list the etcd members at $others; again in 5 s"
        elif grep -qF ", $peer_url," <<<"$members"; then
          break
        elif grep -q ', unstarted,' <<<"$members"; then
          log "another etcd member is joining; wait for it to start"
        elif etcdctl_on "$others" member add "$NODE_NAME" --peer-urls="$peer_url" >/dev/null; then
          log "etcdctl member add $NODE_NAME --peer-urls=$peer_url"
        else
          warn "etcdctl member add $NODE_NAME failed; again in 5 s"
        fi
        sleep 5
      done
      # id, status, name, peer URLs, client URLs, is learner: the members that have started, and this one.
      initial=""
      while IFS=',' read -r _ status name peers _; do
        status=${status// /} name=${name// /} peers=${peers// /}
        if [ "$peers" = "$peer_url" ]; then
          initial+="${initial:+,}$NODE_NAME=$peers"
        elif [ -n "$peers" ] && [ "$status" = started ]; then
          initial+="${initial:+,}$name=$peers"
        fi
      done <<<"$members"
      state=existing
    fi
    write_file "$ETCD_ENV" 0600 <<EOF || true
# Written by vagrant/controlplane.sh: this node's etcd member (kubepy-etcd.service). The
# INITIAL_* settings only matter until the member has data in ETCD_DATA_DIR.
ETCD_NAME=$NODE_NAME
ETCD_DATA_DIR=$ETCD_DIR/data
ETCD_LISTEN_CLIENT_URLS=https://$NODE_IP:$ETCD_CLIENT_PORT,https://127.0.0.1:$ETCD_CLIENT_PORT
ETCD_ADVERTISE_CLIENT_URLS=https://$NODE_IP:$ETCD_CLIENT_PORT
ETCD_LISTEN_PEER_URLS=$peer_url
ETCD_INITIAL_ADVERTISE_PEER_URLS=$peer_url
ETCD_INITIAL_CLUSTER=$initial
ETCD_INITIAL_CLUSTER_STATE=$state
ETCD_INITIAL_CLUSTER_TOKEN=kubepy
ETCD_CERT_FILE=$ETCD_PKI/server.crt
ETCD_KEY_FILE=$ETCD_PKI/server.key
ETCD_TRUSTED_CA_FILE=$ETCD_PKI/ca.crt
ETCD_CLIENT_CERT_AUTH=true
ETCD_PEER_CERT_FILE=$ETCD_PKI/peer.crt
ETCD_PEER_KEY_FILE=$ETCD_PKI/peer.key
ETCD_PEER_TRUSTED_CA_FILE=$ETCD_PKI/ca.crt
ETCD_PEER_CLIENT_CERT_AUTH=true
# Emulated VMs stall for seconds: with etcd's 100/1000 ms they would hold elections all the time (at
# 250 ms, members three VMs shared two cores with logged "failed to send out heartbeat on time" every second).
ETCD_HEARTBEAT_INTERVAL=500
ETCD_ELECTION_TIMEOUT=5000
EOF
  fi
  if write_file "/etc/systemd/system/$ETCD_UNIT.service" 0644 <"$KUBEPY_SRC/systemd/$ETCD_UNIT.service"; then
    systemctl daemon-reload
  fi
  # Never restarted by provisioning: a member's settings only matter until it has data, and a
  # restart would cost the cluster a member for nothing.
  ensure_service "$ETCD_UNIT" false
  log "wait for the etcd member at https://$NODE_IP:$ETCD_CLIENT_PORT"
  wait_for "$WAIT" "etcd (journalctl -u $ETCD_UNIT)" etcdctl_on "https://127.0.0.1:$ETCD_CLIENT_PORT" endpoint health

  # keepalived: API_VIP on one control plane whose API server is ready (VRRP, unicast to the others).
  # Readiness is the supervisor's file (kubepy controlplane --ready-file, common.sh), not a check script.
  rm -f /etc/keepalived/kubepy-apiserver-ready
  priority=150
  peers=""
  for i in "${!cp_ips[@]}"; do
    if [ "${cp_ips[$i]}" = "$NODE_IP" ]; then priority=$((150 - i)); else peers+="    ${cp_ips[$i]}"$'\n'; fi
  done
  keepalived_changed=false
  if write_file "$KEEPALIVED_CONF" 0644 <<EOF; then keepalived_changed=true; fi
# Written by vagrant/controlplane.sh: the API's virtual address $API_VIP, held by the control plane
# of highest priority; another takes it over within seconds when that one stops. An API server that
# is not ready lowers its node's priority below every ready peer's (kubeadm's HA guide: weight, not a
# fault state), so the address moves to a ready API server when there is one, and stays somewhere
# when none is (three emulated control planes on two cores all timed out together, and as faults
# they left the address nowhere).
global_defs {
  router_id $NODE_NAME
}
# The API server's readiness comes from its supervisor (kubepy controlplane --ready-file): 0 while it
# answers /readyz, 1 otherwise, from the start, and when the unit stops (ExecStopPost). It is probed
# in-process over one kept-alive connection: an openssl s_client check every few seconds took up to a
# fifth of an emulated control plane's CPU. keepalived follows the file's renames (inotify).
track_file kubepy_apiserver {
  file $READY_FILE
  weight -50
  # Missing (this boot's supervisor not started yet): not ready, so a node that comes back does not
  # take the address before its API server is ready.
  init_file 1
}
vrrp_instance kubepy_api {
  state BACKUP
  interface $NODE_IF
  virtual_router_id ${API_VIP##*.}
  priority $priority
  advert_int 1
  unicast_src_ip $NODE_IP
  unicast_peer {
$peers  }
  virtual_ipaddress {
    $API_VIP/24 dev $NODE_IF
  }
  track_file {
    kubepy_apiserver
  }
}
EOF
fi

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
elif $ha && ! grep -qwF -- "$API_VIP" <<<"$cert_ips"; then
  die "the API server's certificate does not name the virtual address $API_VIP (it has: $cert_ips)"
fi
if $ha; then
  ensure_service keepalived "$keepalived_changed"
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
# With several control planes, what leaves this VM names the virtual address (and, for kubepy's own
# clients, every API server after it: the kubepy.io/servers extension they fail over along).
server="https://$NODE_IP:$API_PORT"
servers=""
if $ha; then
  server="https://$API_VIP:$API_PORT"
  servers=$server
  for ip in "${cp_ips[@]}"; do servers+=",https://$ip:$API_PORT"; done
fi
# rewrite_kubeconfigs SERVER SERVERS DIR SRC:NAME...: each SRC's YAML with every cluster's server
# replaced (and, if SERVERS, the kubepy.io/servers extension) written to DIR/NAME. One Python for all
# of them: on an emulated VM each interpreter start costs half a minute.
rewrite_kubeconfigs() {
  "$VENV/bin/python" - "$@" <<'EOF'
import os
import sys
import yaml
from kubepy.client.config import servers_extension
server, servers, out = sys.argv[1:4]
for pair in sys.argv[4:]:
    src, name = pair.rsplit(":", 1)
    config = yaml.safe_load(open(src))
    for cluster in config.get("clusters") or []:
        cluster["cluster"]["server"] = server
        if servers and name != "admin.kubeconfig":
            cluster["cluster"]["extensions"] = servers_extension(servers.split(","))
    with open(os.path.join(out, name), "w") as f:
        f.write(yaml.safe_dump(config, default_flow_style=False))
EOF
}
staged=$(mktemp -d)
rewrites=("$ADMIN:admin.kubeconfig")
for name in "${ADDON_KUBECONFIGS[@]}"; do
  if $ha; then rewrites+=("$CP_DIR/$name.kubeconfig:$name.kubeconfig"); else cp "$CP_DIR/$name.kubeconfig" "$staged/"; fi
done
# The admin kubeconfig names only SERVER; the add-ons' also every API server (kubepy.io/servers).
rewrite_kubeconfigs "$server" "$servers" "$staged" "${rewrites[@]}"
write_file "$ETC/ca.crt" 0644 <"$CP_DIR/ca.crt" && touch "$RESTART_MARK"
write_bootstrap_token "$token"
mkdir -p "$PUBLISH_DIR"
chmod 0700 "$PUBLISH_DIR"
write_file "$PUBLISH_DIR/admin.kubeconfig" 0600 <"$staged/admin.kubeconfig" || true
write_file "$PUBLISH_DIR/bootstrap-token" 0600 <<<"$token" || true
write_file "$PUBLISH_DIR/ca.crt" 0644 <"$CP_DIR/ca.crt" || true
addon_files=()
for name in "${ADDON_KUBECONFIGS[@]}"; do
  write_file "$PUBLISH_DIR/$name.kubeconfig" 0600 <"$staged/$name.kubeconfig" || true
  addon_files+=("$name.kubeconfig")
done
rm -rf "$staged"
if $ha && $first; then
  # What the other control planes join with (kubeadm's shared certificates), for their provisioning only.
  join_files=()
  for f in "${JOIN_FILES[@]}"; do [ ! -e "$CP_DIR/$f" ] || join_files+=("$f"); done
  bundle=$(tar -c -C "$CP_DIR" --owner=0 --group=0 --mtime=@0 --sort=name -- "${join_files[@]}" | base64 -w 0)
  write_file "$PUBLISH_DIR/$JOIN_BUNDLE" 0600 <<<"$bundle" || true
  addon_files=("$JOIN_BUNDLE" "${addon_files[@]}")
fi
if ! $first; then
  log "the first control plane publishes for the host and the workers; this one does not"
elif mkdir -p "$SHARED_DIR" 2>/dev/null && [ -w "$SHARED_DIR" ]; then
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
install_addon_kubeconfigs "$PUBLISH_DIR"
ensure_service kubepy-kubelet
wait_kubelet_joined
ensure_service kubepy-proxy
ensure_service kubepy-netpol
ensure_service kubepy-dns
# The ingress controller and Gateway API: on the first control plane (its address is in Ingresses' status).
if $first; then
ensure_service kubepy-ingress
# Gateway API on the ingress controller's nginx, as `kubepy up` installs it: the CRDs, then (once they are
# served) the GatewayClass kubepy (controller kubepy.io/gateway). Both ship inside the kubepy package.
gatewayapi=$("$VENV/bin/python" -c 'import pathlib, kubepy.ingress; print(pathlib.Path(kubepy.ingress.__file__).parent / "gatewayapi")')
log "install Gateway API CRDs and GatewayClass kubepy ($gatewayapi)"
# --validate=false: kubepy's own manifests; kubectl's validation would fetch the OpenAPI documents,
# which the API server rebuilds after each CRD (about a minute of CPU on an emulated VM).
# Retried: on an emulated VM whose every daemon is starting, kubectl's discovery has timed out in TLS
# handshakes ("no matches for kind CustomResourceDefinition"), and the apply failed with it.
retry 5 15 kc apply --validate=false -f "$gatewayapi/crds.yaml" >/dev/null
# $WAIT, not a minute: on an emulated VM whose daemons are all still starting, Established has come
# later than 60 s (CI, 2026-12-07: the API server's loop lagged 35 s and the wait killed the provisioning).
kc wait --for=condition=Established --timeout="${WAIT}s" -f "$gatewayapi/crds.yaml" >/dev/null
retry 5 15 kc apply --validate=false -f "$gatewayapi/gatewayclass.yaml" >/dev/null
fi
log "wait for node $NODE_NAME to register"
wait_for "$WAIT" "node $NODE_NAME to register" kc get node "$NODE_NAME"
taints=$(kc get node "$NODE_NAME" -o 'jsonpath={range .spec.taints[*]}{.key}:{.effect}{"\n"}{end}')
if ! grep -qxF "$CONTROLPLANE_TAINT" <<<"$taints"; then
  log "taint $NODE_NAME $CONTROLPLANE_TAINT"
  retry 5 15 kc taint node "$NODE_NAME" "$CONTROLPLANE_TAINT" --overwrite
fi
# The admin labels it, as kubeadm does: NodeRestriction keeps a kubelet from giving itself node-role labels.
# Retried, as the CRD apply above: a joining control plane's API server, starved, has missed kubectl's
# TLS handshakes here (run 3 of tests/e2e/test_vagrant_ha.py).
retry 5 15 kc label node "$NODE_NAME" "$CONTROLPLANE_LABEL" --overwrite >/dev/null

# -- 4. cluster DNS -----------------------------------------------------------------------------
log "publish kube-dns (10.96.0.10)"
retry 5 15 publish_kube_dns "$ADMIN"

rm -f "$RESTART_MARK"
log "control plane ready: KUBECONFIG=.kube/admin.kubeconfig kubectl get nodes -o wide (on the host)"
