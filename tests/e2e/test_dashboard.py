"""The dashboard in a real browser: the distribution's headless Chromium driven by Selenium
(chromium-driver), against a one-node lab whose control plane runs the dashboard.

Logged in with the admin's token, the browser sees the node, scales a Deployment and watches the
pod count change, follows a new Deployment (exposed by a Service) through the architecture view
to Ready and on to kube-proxy's chain, whose name is then found on the node with iptables, and
reads a pod's log as it is written; a ServiceAccount bound to ``view`` sees the API server's 403
when it tries to scale. Screenshots are saved under a directory the test prints.

The test checks the dashboard's certificate against the cluster CA with Python's ssl; Chromium, which
does not know that CA, then trusts exactly that certificate's key (``--ignore-certificate-errors-spki-list``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import ssl
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.e2e.test_lab import Lab, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
IMAGE = "docker.io/library/busybox:1.36"


def _browser_prerequisites() -> None:
    """Fail (never skip) naming what to install: a dashboard untested in a browser is not tested."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is missing: pip install '.[test]' (or pip install selenium)")


def _spki_sha256(cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    _browser_prerequisites()
    lab = Lab()
    try:
        up = lab.up_with_busybox(1)
        lab.up_stdout = up.stdout  # type: ignore[attr-defined]
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


class Page:
    """The browser on the dashboard, with waits that save a screenshot and the console when they fail."""

    def __init__(self, driver: Any, url: str, shots: Path) -> None:
        self.driver, self.url, self.shots = driver, url, shots

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def wait(self, cond: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = cond()
            except Exception as e:  # noqa: BLE001 - an element not there yet, or replaced under us
                last = e
            if last and not isinstance(last, Exception):
                return last
            time.sleep(0.25)
        shot = self.shot("failed-" + re.sub(r"[^a-z0-9]+", "-", what.lower())[:60])
        console = "\n".join(str(e) for e in self.driver.get_log("browser"))
        raise AssertionError(f"timed out waiting for {what}: last={last!r}\nscreenshot: {shot}\nconsole:\n{console}")

    def act(self, action: Callable[[], Any], what: str) -> Any:
        """``action`` again if the view redrew the elements it held (views redraw on every watch event)."""
        from selenium.common.exceptions import StaleElementReferenceException

        for _ in range(20):
            try:
                return action()
            except StaleElementReferenceException:
                time.sleep(0.1)
        raise AssertionError(f"{what}: the elements kept being redrawn")

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def go(self, hash_: str) -> None:
        self.driver.get(f"{self.url}{hash_}")

    def log_in(self, token: str) -> None:
        self.go("#/overview")
        self.wait(lambda: self.css("#token") and self.css("#token")[0].is_displayed(), "the login form")
        self.css("#token")[0].send_keys(token)
        self.css("#login-button")[0].click()


@pytest.fixture(scope="module")
def page(lab: Lab) -> Iterator[Page]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    m = re.search(r"dashboard:\s+(https://\S+)", lab.up_stdout)  # type: ignore[attr-defined]
    assert m, f"kubepy up printed no dashboard URL:\n{lab.up_stdout}"  # type: ignore[attr-defined]
    url = m.group(1)
    ca = lab.kubeconfig.parent / "ca.crt"
    ctx = ssl.create_default_context(cafile=str(ca))   # the dashboard's certificate is by the cluster CA

    def serving() -> bool:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as r:
            return r.status == 200 and "Content-Security-Policy" in r.headers
    wait_for(lambda: _quietly(serving), 60, f"the dashboard at {url}")
    # Verified against the cluster CA above; Chromium, which does not know that CA, trusts exactly this key.
    host, port = urlsplit(url).hostname, urlsplit(url).port
    leaf = ssl.get_server_certificate((host, port)).encode()
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="kubepy-dashboard-chromium-")
    # The SPKI list is honoured only with an explicit --user-data-dir.
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1100",
                 f"--user-data-dir={profile}", f"--ignore-certificate-errors-spki-list={_spki_sha256(leaf)}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    shots = Path(tempfile.mkdtemp(prefix="kubepy-dashboard-shots-"))
    print(f"\nscreenshots: {shots}")
    try:
        yield Page(driver, url, shots)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _quietly(f: Callable[[], bool]) -> bool:
    try:
        return f()
    except OSError:
        return False


def admin_token(lab: Lab) -> str:
    return yaml.safe_load(lab.kubeconfig.read_text())["users"][0]["user"]["token"]


def test_log_in_and_see_the_nodes(lab: Lab, page: Page) -> None:
    page.log_in("not-a-token")
    err = page.wait(lambda: page.css("#login-error")[0].is_displayed() and page.css("#login-error")[0].text,
                    "the refusal of a bad token")
    assert "401" in err, err
    page.log_in(admin_token(lab))
    page.wait(lambda: page.css("#whoami")[0].text, "who is logged in")
    node = f"{lab.name}-node1"
    page.wait(lambda: page.css(f'#nodes tr[data-key="{node}"][data-ready="true"]'), f"node {node} Ready")
    assert page.css("#nodes-ready")[0].text.startswith("1/1"), page.css("#nodes-ready")[0].text
    row = page.css(f'#nodes tr[data-key="{node}"]')[0].text
    assert re.search(r"\d+\.\d+\.\d+\.\d+", row), row   # its InternalIP
    page.shot("01-overview")


def _deployment_row(page: Page, name: str) -> Any:
    rows = page.css(f'#deployments tr[data-key="default/{name}"]')
    return rows[0] if rows else None


def test_scale_a_deployment_and_watch_the_pod_count_change(lab: Lab, page: Page) -> None:
    lab.kubectl("create", "deployment", "web", f"--image={IMAGE}", "--", "sleep", "3600")
    page.go("#/workloads")
    page.wait(lambda: (r := _deployment_row(page, "web")) is not None and r.get_attribute("data-ready") == "1",
              "deployment web with 1 ready pod")
    def scale_to_3() -> None:
        replicas = _deployment_row(page, "web").find_element("css selector", "input.replicas")
        replicas.clear()
        replicas.send_keys("3")
        _deployment_row(page, "web").find_element("css selector", "button.scale-button").click()
    page.act(scale_to_3, "scale web to 3")
    page.wait(lambda: _deployment_row(page, "web").get_attribute("data-ready") == "3", "3 ready replicas", 90)
    assert lab.json("get", "deployment", "web")["spec"]["replicas"] == 3
    page.shot("02-scaled")
    page.go("#/pods")
    page.wait(lambda: len([r for r in page.css("#pods tr[data-key^='default/web-']")
                           if r.get_attribute("data-status") == "Running"]) == 3, "3 web pods Running")
    page.shot("03-pods")


def test_follow_a_new_deployment_through_the_architecture_to_ready(lab: Lab, page: Page) -> None:
    page.go("#/architecture")
    page.wait(lambda: page.css(f'svg#arch g.node[data-node="{lab.name}-node1"]'), "the node in the picture")
    page.css("#follow-next")[0].click()
    page.wait(lambda: "next new Deployment" in page.css("#follow-status")[0].text, "waiting for the next Deployment")
    lab.kubectl("create", "service", "clusterip", "follow", "--tcp=80:80")
    lab.kubectl("create", "deployment", "follow", f"--image={IMAGE}", "--", "sleep", "3600")
    page.wait(lambda: "default/follow" in page.css("#follow-status")[0].text, "the view following default/follow")
    pod = page.wait(lambda: [li.get_attribute("data-step").split(":")[1] for li in
                             page.css('#timeline li.done[data-step$=":ready"]')], "the followed pod Ready", 90)[0]
    wanted = ("deployment", f"pod:{pod}", f"pod:{pod}:scheduled", f"pod:{pod}:sandbox",
              f"pod:{pod}:container:busybox", f"pod:{pod}:ready")
    steps = page.wait(lambda: (done := {li.get_attribute("data-step"): li.text for li in page.css("#timeline li.done")})
                      and all(w in done for w in wanted) and done, f"the steps {wanted}")
    for step in wanted:
        assert re.search(r"\d\d:\d\d:\d\d", steps[step]), (step, steps[step])   # each step has its time
    assert re.search(r"seen \d\d:\d\d:\d\d\.\d{3}", steps[f"pod:{pod}:sandbox"])   # no timestamp in the API: seen
    assert "Successfully assigned default/" in steps[f"pod:{pod}:scheduled"], steps[f"pod:{pod}:scheduled"]
    assert f"ctr --address " in steps[f"pod:{pod}:container:busybox"], steps[f"pod:{pod}:container:busybox"]
    page.wait(lambda: page.css(f'#timeline li.done[data-step="pod:{pod}:endpoints:follow"]'), "the pod in the endpoints")
    rules = page.wait(lambda: [li.text for li in page.css('#timeline li.done[data-step="rules:follow"]')
                               if "KUBE-SVC-" in li.text], "kube-proxy's chain for Service follow")[0]
    cmd = re.search(r"ip netns exec (\S+) iptables -t nat -S (KUBE-SVC-[A-Z2-7]{16})", rules)
    assert cmd, rules
    assert cmd.group(1) == lab.node_netns(1)
    # The command the view printed shows the rule for real, on the node.
    shown = wait_for(lambda: (cp := lab.in_node(1, "iptables", "-t", "nat", "-S", cmd.group(2))).returncode == 0
                     and cp.stdout, 30, f"chain {cmd.group(2)} on the node")
    assert "KUBE-SEP-" in shown, shown
    assert page.css(f'svg#arch g.pod.followed[data-pod="default/{pod}"]'), "the followed pod drawn on its node"
    page.shot("04-architecture-followed")
    page.act(lambda: page.driver.execute_script("arguments[0].scrollIntoView()",
                                                page.css('#timeline li[data-step="rules:follow"]')[0]), "scroll")
    page.shot("04b-architecture-proxy-rules")


def test_services_with_their_endpoints_apply_and_events(lab: Lab, page: Page) -> None:
    page.go("#/services")
    svc = lab.json("get", "service", "follow")
    ip = lab.json("get", "pods", "-l", "app=follow")["items"][0]["status"]["podIP"]
    row = page.wait(lambda: [r.text for r in page.css('#service-list tr[data-key="default/follow"]')
                             if ip in r.text], "Service follow with its endpoint")[0]
    assert f"{svc['spec']['clusterIP']}:80/tcp (cluster IP" in row and "follow.default.svc.cluster.local:80" in row, row
    page.shot("05-services")
    page.go("#/apply")
    page.wait(lambda: page.css("#manifest"), "the apply view")
    page.css("#manifest")[0].send_keys("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pasted\ndata:\n  a: b\n")
    page.css("#apply-button")[0].click()
    done = page.wait(lambda: [li.text for li in page.css("#apply-results li")], "the apply result")[0]
    assert done == "configmap/pasted (default) created", done
    assert lab.json("get", "configmap", "pasted")["data"] == {"a": "b"}
    page.go("#/events")
    page.wait(lambda: [r for r in page.css("#event-list tr[data-key]") if "ScalingReplicaSet" in r.text],
              "the deployment controller's events")


def test_read_a_pods_log_as_it_is_written(lab: Lab, page: Page) -> None:
    lab.kubectl("run", "logger", f"--image={IMAGE}", "--", "sh", "-c",
                "echo hello-from-kubepy; i=0; while true; do echo line $i; i=$((i+1)); sleep 1; done")
    lab.kubectl("wait", "--for=condition=Ready", "pod/logger", "--timeout=60s")
    page.go("#/pod/default/logger")
    page.wait(lambda: "hello-from-kubepy" in page.css("#log")[0].text, "the log's first line")
    first = page.css("#log")[0].text.count("line ")
    page.wait(lambda: page.css("#log")[0].text.count("line ") >= first + 2, "new lines while following")
    page.wait(lambda: page.css('#pod-events tr[data-key]'), "the pod's events")
    page.shot("06-pod-log")


def test_a_view_only_service_account_sees_the_403_when_it_scales(lab: Lab, page: Page) -> None:
    lab.kubectl("create", "serviceaccount", "viewer")
    lab.kubectl("create", "rolebinding", "viewer", "--clusterrole=view", "--serviceaccount=default:viewer")
    token = lab.kubectl("create", "token", "viewer").stdout.strip()
    page.css("#logout")[0].click()
    page.log_in(token)
    page.wait(lambda: "system:serviceaccount:default:viewer" in page.css("#whoami")[0].text, "logged in as viewer")
    page.go("#/workloads")
    # Bound in default only: listing every namespace's Deployments is refused, and the view says so.
    refused = page.wait(lambda: [e.text for e in page.css("#deployments .error")], "the refusal to list everywhere")[0]
    assert "403" in refused and "forbidden" in refused, refused
    from selenium.webdriver.common.keys import Keys

    page.css("#namespace")[0].send_keys("default", Keys.TAB)
    page.wait(lambda: _deployment_row(page, "web"), "the viewer lists deployments in default")
    page.act(lambda: _deployment_row(page, "web").find_element("css selector", "button.scale-button").click(),
             "scale as viewer")
    toast = page.wait(lambda: [t.text for t in page.css(".toast.error")], "the refusal shown")[0]
    assert "403" in toast and "forbidden" in toast, toast
    page.shot("07-viewer-forbidden")
