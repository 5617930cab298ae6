"""The pyclient image's program (/app/incluster.py) with the host's official client and a fake API (fast).

The image itself is built and run in a lab by tests/e2e/test_incluster.py.
"""

from __future__ import annotations

import types

import pytest
from kubernetes.client.rest import ApiException

from kubepy.images import INCLUSTER_PY, OPTIONAL_IMAGES, PYCLIENT_PACKAGES, PYCLIENT_REF, archive_name


@pytest.fixture
def program() -> types.ModuleType:
    mod = types.ModuleType("incluster")
    exec(compile(INCLUSTER_PY, "/app/incluster.py", "exec"), mod.__dict__)
    return mod


class FakeCoreV1:
    """Answers list_namespaced_pod from a table: namespace → pod names, or an HTTP status to refuse with."""

    def __init__(self, answers: dict[str, list[str] | int]) -> None:
        self.answers = answers

    def list_namespaced_pod(self, namespace: str):
        answer = self.answers[namespace]
        if isinstance(answer, int):
            raise ApiException(status=answer, reason={403: "Forbidden", 404: "Not Found"}[answer])
        items = [types.SimpleNamespace(metadata=types.SimpleNamespace(name=n)) for n in answer]
        return types.SimpleNamespace(items=items)


@pytest.mark.parametrize("answer, line", [
    (["web-2", "app", "web-1"], "pods in ns: app,web-1,web-2"),
    ([], "pods in ns: "),
    (403, "forbidden in ns: 403"),
    (404, "error in ns: 404 Not Found"),
])
def test_one_line_per_outcome(program, answer, line):
    assert program.outcome(FakeCoreV1({"ns": answer}), "ns") == line


def test_main_reads_its_namespace_then_the_arguments(program, tmp_path, capsys, monkeypatch):
    ns_file = tmp_path / "namespace"
    ns_file.write_text("team")
    monkeypatch.setattr(program, "NAMESPACE_FILE", str(ns_file))
    monkeypatch.setattr(program.config, "load_incluster_config", lambda: None)
    monkeypatch.setattr(program.client, "CoreV1Api", lambda: FakeCoreV1({"team": ["me"], "other": 403}))
    assert program.main(["incluster.py", "other"]) == 0
    assert capsys.readouterr().out == "pods in team: me\nforbidden in other: 403\n"


def test_image_is_optional_and_names_its_archive():
    assert PYCLIENT_REF in OPTIONAL_IMAGES and archive_name(PYCLIENT_REF) == "pyclient-1.tar"
    assert "python3-kubernetes" in PYCLIENT_PACKAGES and "python3.11-minimal" in PYCLIENT_PACKAGES


def test_kopf_and_hello_images_are_optional_and_the_pip_tree_is_kept_per_requirements(tmp_path, monkeypatch):
    from pathlib import Path

    from kubepy import images

    assert images.KOPF_REF in OPTIONAL_IMAGES and images.HELLO_REF in OPTIONAL_IMAGES
    assert archive_name(images.KOPF_REF) == "kopf-1.tar"
    compile(images.KOPF_MAIN, "/usr/local/bin/kopf", "exec")
    calls: list[tuple[str, ...]] = []

    def fake_pip(*argv: str, **_: object) -> str:
        calls.append(argv)
        Path(argv[argv.index("--target") + 1]).mkdir(parents=True)
        return ""

    monkeypatch.setattr(images, "_run", fake_pip)
    first = images.pip_target(("kopf==1.45.2",), tmp_path)
    assert images.pip_target(("kopf==1.45.2",), tmp_path) == first and first.is_dir()
    assert len(calls) == 1 and calls[0][-1] == "kopf==1.45.2"
    # for the image's interpreter, not the host's: binary wheels of CPython 3.11
    assert {"--python-version", "3.11", "--only-binary=:all:"} <= set(calls[0])
    assert images.pip_target(("kopf==1.45.3",), tmp_path) != first and len(calls) == 2
