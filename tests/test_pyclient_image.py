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
