"""StatefulSets on a 2-node lab, with the stock kubectl.

Three busybox web servers behind a headless Service: the pods start in order
(each created only once its predecessor is Ready), each answers at its own
DNS name from another pod (nslookup and wget), a deleted pod comes back under
the same name and answers again, ``kubectl rollout status/history/undo sts``
roll the template forward and back through ControllerRevisions from the
highest ordinal down, and ``kubectl scale sts`` removes the highest ordinal.
"""

from __future__ import annotations

import shutil

import pytest

from kubepy.controllers.pods import parse_time
from tests.e2e.test_lab import Lab, wait_for

pytestmark = pytest.mark.slow

FQDN = "{pod}.nginx.default.svc.cluster.local"

MANIFEST = """
apiVersion: v1
kind: Service
metadata: {name: nginx}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: nginx
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}, annotations: {version: "one"}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: busybox:1.36
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
        command: ["sh", "-c", "mkdir -p /www && echo \\"$(hostname) $VERSION\\" > /www/index.html && trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
        env: [{name: VERSION, value: one}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox:1.36
    # Every second, from this other pod: each web-<i>'s address by its own DNS name (nslookup), what
    # it answers there (wget), and how many SRV targets the named port has. One log line per round.
    command:
    - sh
    - -c
    - |
      trap 'exit 0' TERM
      while true; do
        line="round"
        for i in 0 1 2 3; do
          name=web-$i.nginx.default.svc.cluster.local
          ip=$(nslookup $name 2>/dev/null | awk '/^Address: /{print $2}' | tail -n 1)
          answer=$(timeout 3 wget -q -O - http://$name:8080/ 2>/dev/null)
          line="$line|web-$i=$ip=$answer"
        done
        srv=$(nslookup -type=SRV _http._tcp.nginx.default.svc.cluster.local 2>/dev/null | grep -o 'web-[0-9]*.nginx.default.svc.cluster.local' | sort | tr '\\n' ' ')
        echo "$line|srv=$srv|end"
        sleep 1
      done
"""


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        up = lab.up_with_busybox(2)
        assert "ready in" in up.stdout, up.stdout
        lab.kubectl("apply", "-f", "-", input=MANIFEST)
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def is_ready(pod: dict) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def ready_names(lab: Lab) -> list[str]:
    return sorted(p["metadata"]["name"] for p in lab.json("get", "pods", "-l", "app=web")["items"] if is_ready(p))


def latest(lab: Lab) -> dict[str, str]:
    """The client pod's last complete round: {"web-0": "IP=ANSWER", …, "srv": "web-0… web-1…"}."""
    cp = lab.kubectl("logs", "client", "--tail=3", check=False)
    rounds = [line for line in cp.stdout.splitlines() if line.startswith("round|") and line.endswith("|end")]
    if not rounds:
        return {}
    return dict(part.split("=", 1) for part in rounds[-1].split("|")[1:-1])


def ask(lab: Lab, pod: str) -> str:
    """What pod ``pod`` answers at its own DNS name, asked from the client pod ("" if nothing yet)."""
    return latest(lab).get(pod, "=").split("=", 1)[1].strip()


def answered(lab: Lab, pod: str, want: str) -> bool:
    """The client's next rounds see ``pod`` answer ``want`` (a fresh round, not an old one)."""
    return ask(lab, pod) == want


def test_pods_start_in_order_each_after_its_predecessor_is_ready(lab: Lab):
    wait_for(lambda: ready_names(lab) == ["web-0", "web-1", "web-2"], 90, "3 ready pods")
    pods = {p["metadata"]["name"]: p for p in lab.json("get", "pods", "-l", "app=web")["items"]}
    for before, after in (("web-0", "web-1"), ("web-1", "web-2")):
        ready_at = next(parse_time(c["lastTransitionTime"]) for c in pods[before]["status"]["conditions"]
                        if c["type"] == "Ready")
        created = parse_time(pods[after]["metadata"]["creationTimestamp"])
        assert ready_at is not None and created is not None and created >= ready_at, (before, ready_at, after, created)
        assert pods[after]["spec"]["hostname"] == after and pods[after]["spec"]["subdomain"] == "nginx"
        assert pods[after]["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == after
    events = [e["message"] for e in sorted(lab.json("get", "events", "--field-selector",
                                                    "involvedObject.kind=StatefulSet")["items"],
                                           key=lambda e: e.get("firstTimestamp") or "")]
    created = [m for m in events if m.startswith("create Pod")]
    assert created == [f"create Pod web-{i} in StatefulSet web successful" for i in range(3)]
    lines = lab.kubectl("get", "sts", "web", "-o", "wide").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"]
    wait_for(lambda: lab.kubectl("get", "sts", "web").stdout.splitlines()[1].split()[1] == "3/3", 20, "3/3")


def test_each_pod_answers_at_its_own_dns_name(lab: Lab):
    wait_for(lambda: ready_names(lab) == ["web-0", "web-1", "web-2"], 90, "3 ready pods")
    ips = {f"web-{i}": lab.json("get", "pod", f"web-{i}")["status"]["podIP"] for i in range(3)}
    want = {pod: f"{ip}={pod} one" for pod, ip in ips.items()}
    seen = wait_for(lambda: (lambda r: r if all(r.get(p) == w for p, w in want.items()) else None)(latest(lab)),
                    60, "every pod answering at its own name")
    assert seen["web-3"] == "="   # no such pod: no address, no answer
    # SRV for the named port points at the pods' own names
    assert seen["srv"].split() == [FQDN.format(pod=f"web-{i}") for i in range(3)], seen


def test_a_deleted_pod_comes_back_with_the_same_name(lab: Lab):
    wait_for(lambda: ready_names(lab) == ["web-0", "web-1", "web-2"], 90, "3 ready pods")
    old_uid = lab.json("get", "pod", "web-1")["metadata"]["uid"]
    lab.kubectl("delete", "pod", "web-1", "--wait=false")
    back = wait_for(lambda: (lambda p: p if p["metadata"]["uid"] != old_uid and is_ready(p) else None)(
        lab.json("get", "pod", "web-1")), 60, "web-1 back")
    assert back["spec"]["hostname"] == "web-1"
    wait_for(lambda: answered(lab, "web-1", "web-1 one") and
             latest(lab)["web-1"].startswith(back["status"]["podIP"] + "="), 30, "web-1 answers at its name")


def test_rollout_status_history_and_undo(lab: Lab):
    wait_for(lambda: ready_names(lab) == ["web-0", "web-1", "web-2"], 90, "3 ready pods")
    lab.kubectl("rollout", "status", "sts/web", "--timeout=60s", timeout=90)
    lab.kubectl("set", "env", "sts/web", "VERSION=two")
    done = lab.kubectl("rollout", "status", "sts/web", "--timeout=120s", timeout=150)
    # partition is defaulted (0), so kubectl reports a partitioned roll out, as on Kubernetes
    assert "partitioned roll out complete: 3 new pods have been updated" in done.stdout, done.stdout
    wait_for(lambda: [ask(lab, f"web-{i}") for i in range(3)] == [f"web-{i} two" for i in range(3)], 20,
             "every pod answering with the new template")
    deletes = [e["message"] for e in sorted(lab.json("get", "events", "--field-selector",
                                                     "involvedObject.kind=StatefulSet")["items"],
                                            key=lambda e: e.get("firstTimestamp") or "")
               if e["reason"] == "SuccessfulDelete"]
    assert deletes[-3:] == [f"delete Pod web-{i} in StatefulSet web successful" for i in (2, 1, 0)]
    hist = lab.kubectl("rollout", "history", "sts/web").stdout.split()
    assert hist[hist.index("REVISION"):][:4] == ["REVISION", "CHANGE-CAUSE", "1", "<none>"] and "2" in hist, hist
    undone = lab.kubectl("rollout", "undo", "sts/web")
    assert "rolled back" in undone.stdout, undone.stdout
    lab.kubectl("rollout", "status", "sts/web", "--timeout=120s", timeout=150)
    sts = lab.json("get", "sts", "web")
    assert sts["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "VERSION", "value": "one"}]
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
    wait_for(lambda: answered(lab, "web-0", "web-0 one"), 30, "web-0 back at the old template")
    revisions = lab.json("get", "controllerrevisions", "-l", "app=web")["items"]
    assert sorted(r["revision"] for r in revisions) == [2, 3]   # the first revision renumbered to 3


def test_kubectl_scale_sts(lab: Lab):
    wait_for(lambda: ready_names(lab) == ["web-0", "web-1", "web-2"], 120, "3 ready pods")
    lab.kubectl("scale", "sts", "web", "--replicas=2")
    wait_for(lambda: sorted(p["metadata"]["name"] for p in lab.json("get", "pods", "-l", "app=web")["items"])
             == ["web-0", "web-1"], 60, "web-2 removed")
    wait_for(lambda: lab.json("get", "sts", "web")["status"].get("replicas") == 2, 30, "status.replicas 2")
    lab.kubectl("scale", "sts", "web", "--replicas=4")
    wait_for(lambda: ready_names(lab) == ["web-0", "web-1", "web-2", "web-3"], 90, "4 ready pods")
    wait_for(lambda: answered(lab, "web-3", "web-3 one"), 30, "web-3 answers at its name")
