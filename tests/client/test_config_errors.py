"""ClientConfig from kubeconfig files, and Status bodies to typed errors."""

from __future__ import annotations

import base64

import pytest
import yaml

from kubepy.client import (
    AlreadyExistsError,
    APIStatusError,
    ClientConfig,
    ConflictError,
    GoneError,
    InvalidError,
    NotFoundError,
    ServerError,
)
from kubepy.client.errors import error_from_status


def write(path, doc) -> None:
    path.write_text(yaml.safe_dump(doc))


def test_from_kubeconfig_inline_data_and_token(tmp_path):
    doc = {
        "clusters": [{"name": "other", "cluster": {"server": "https://x:1"}},
                     {"name": "c", "cluster": {"server": "https://127.0.0.1:6443/",
                                               "certificate-authority-data": base64.b64encode(b"PEM").decode()}}],
        "users": [{"name": "u", "user": {"token": "tok"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    write(tmp_path / "kc", doc)
    cfg = ClientConfig.from_kubeconfig(tmp_path / "kc")
    assert cfg == ClientConfig(server="https://127.0.0.1:6443", token="tok", ca_data=b"PEM", insecure=False)


def test_from_kubeconfig_file_references_are_relative(tmp_path):
    (tmp_path / "ca.crt").write_bytes(b"CA")
    (tmp_path / "token").write_text("secret\n")
    doc = {
        "clusters": [{"name": "c", "cluster": {"server": "https://h:1", "certificate-authority": "ca.crt"}}],
        "users": [{"name": "u", "user": {"tokenFile": "token"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    write(tmp_path / "kc", doc)
    cfg = ClientConfig.from_kubeconfig(str(tmp_path / "kc"))
    assert (cfg.ca_data, cfg.token) == (b"CA", "secret")


def test_from_kubeconfig_missing_context(tmp_path):
    write(tmp_path / "kc", {"contexts": [], "current-context": "nope"})
    with pytest.raises(ValueError):
        ClientConfig.from_kubeconfig(tmp_path / "kc")


def status(code: int, reason: str, **extra) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": f"{reason} message", **extra}


@pytest.mark.parametrize("code,reason,cls", [
    (404, "NotFound", NotFoundError),
    (409, "Conflict", ConflictError),
    (409, "AlreadyExists", AlreadyExistsError),
    (410, "Expired", GoneError),
    (422, "Invalid", InvalidError),
    (500, "InternalError", ServerError),
    (503, "ServiceUnavailable", ServerError),
    (429, "TooManyRequests", APIStatusError),
])
def test_error_from_status(code, reason, cls):
    err = error_from_status(code, status(code, reason))
    assert type(err) is cls
    assert (err.status, err.reason, err.message) == (code, reason, f"{reason} message")


def test_invalid_causes_and_non_json_body():
    causes = [{"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers"}]
    err = error_from_status(422, status(422, "Invalid", details={"causes": causes}))
    assert isinstance(err, InvalidError) and err.causes == causes
    plain = error_from_status(502, None, "bad gateway")
    assert isinstance(plain, ServerError) and plain.message == "bad gateway" and plain.body is None


def test_from_kubeconfig_client_certificate_inline_and_files(tmp_path):
    user = {"client-certificate-data": base64.b64encode(b"CERT").decode(),
            "client-key-data": base64.b64encode(b"KEY").decode()}
    doc = {"clusters": [{"name": "c", "cluster": {"server": "https://h:1"}}],
           "users": [{"name": "u", "user": user}],
           "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}], "current-context": "ctx"}
    write(tmp_path / "kc", doc)
    cfg = ClientConfig.from_kubeconfig(tmp_path / "kc")
    assert (cfg.client_cert, cfg.client_key, cfg.token) == (b"CERT", b"KEY", None)
    (tmp_path / "u.crt").write_bytes(b"C2")
    (tmp_path / "u.key").write_bytes(b"K2")
    doc["users"][0]["user"] = {"client-certificate": "u.crt", "client-key": "u.key"}
    write(tmp_path / "kc", doc)
    cfg = ClientConfig.from_kubeconfig(tmp_path / "kc")
    assert (cfg.client_cert, cfg.client_key) == (b"C2", b"K2")
    doc["users"][0]["user"] = {"client-certificate": "u.crt"}
    write(tmp_path / "kc", doc)
    with pytest.raises(ValueError, match="without its key"):
        ClientConfig.from_kubeconfig(tmp_path / "kc")


def test_a_token_source_is_asked_per_request():
    tokens = iter(["t1", "t2"])
    cfg = ClientConfig(server="https://h:1", token="fixed", token_source=lambda: next(tokens))
    assert (cfg.bearer_token(), cfg.bearer_token()) == ("t1", "t2")
    assert ClientConfig(server="https://h:1", token="fixed").bearer_token() == "fixed"
