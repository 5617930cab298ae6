"""Bootstrap tokens (shape, expiry, the verdict on a presented token), the join decision, private files."""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat

import pytest

from kubepy import bootstraptoken as bt
from kubepy.api import auth
from kubepy.privatefiles import narrow_file, private_dir, write_private

NOW = dt.datetime(2025, 5, 1, 12, 0, 0, tzinfo=dt.UTC)


# -- token shape --------------------------------------------------------------------------------------

def test_generated_tokens_have_kubeadms_shape_and_differ():
    tokens = {bt.generate() for _ in range(50)}
    assert len(tokens) == 50
    for t in tokens:
        assert bt.TOKEN_RE.match(t), t
        assert bt.parse(t) == tuple(t.split("."))


@pytest.mark.parametrize("text", ["", "abcdef", "abcdef.0123456789abcde", "ABCDEF.0123456789abcdef",
                                  "abcdef.0123456789abcdef0", "abcde.0123456789abcdef", " abcdef.0123456789abcdef",
                                  "abcdef-0123456789abcdef"])
def test_malformed_tokens_do_not_parse(text):
    assert bt.parse(text) is None


# -- expiry parsing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [
    ("24h", 86400), ("1h30m", 5400), ("15m", 900), ("90s", 90), ("1.5h", 5400), ("3600", 3600), (" 2h ", 7200),
    ("500ms", 0.5),
])
def test_ttl_parsing(text, seconds):
    assert bt.parse_ttl(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text,needle", [
    ("0", "must expire"), ("0s", "must expire"), ("0h0m", "must expire"), ("", "invalid duration"),
    ("1d", "invalid duration"), ("h", "invalid duration"), ("-1h", "invalid duration"), ("1h 30m", "invalid duration"),
    ("10000h", "more than a year"),
])
def test_ttl_parsing_refuses(text, needle):
    with pytest.raises(ValueError, match=needle):
        bt.parse_ttl(text)


def test_secret_is_kubeadms_layout_and_expires_after_ttl():
    token = "abcdef.0123456789abcdef"
    s = bt.secret_for(token, now=NOW, ttl=dt.timedelta(hours=24), description="for tests")
    assert s["type"] == "bootstrap.kubernetes.io/token"
    assert s["metadata"] == {"name": "bootstrap-token-abcdef", "namespace": "kube-system"}
    data = {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
    assert data == {"token-id": "abcdef", "token-secret": "0123456789abcdef", "expiration": "2025-05-02T12:00:00Z",
                    "usage-bootstrap-authentication": "true", "description": "for tests"}
    with pytest.raises(ValueError):
        bt.secret_for("not-a-token", now=NOW)


# -- the verdict on a presented token -----------------------------------------------------------------

def _secret(**data: str) -> dict:
    base = {"token-id": "abcdef", "token-secret": "0123456789abcdef", "expiration": "2025-05-01T13:00:00Z",
            "usage-bootstrap-authentication": "true"}
    base.update(data)
    return {"type": bt.SECRET_TYPE, "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in base.items() if v is not None}}


@pytest.mark.parametrize("name,secret,presented,now,user,reason", [
    ("valid", _secret(), "0123456789abcdef", NOW, "system:bootstrap:abcdef", ""),
    ("expired", _secret(), "0123456789abcdef", NOW + dt.timedelta(hours=2), None,
     "bootstrap token abcdef expired at 2025-05-01T13:00:00Z"),
    ("expires exactly now", _secret(), "0123456789abcdef", dt.datetime(2025, 5, 1, 13, tzinfo=dt.UTC), None,
     "bootstrap token abcdef expired at 2025-05-01T13:00:00Z"),
    ("offset expiry", _secret(expiration="2025-05-01T13:30:00+02:00"), "0123456789abcdef", NOW, None,
     "bootstrap token abcdef expired at 2025-05-01T11:30:00Z"),
    ("wrong secret", _secret(), "0123456789abcdeX", NOW, None, "Unauthorized"),
    ("wrong secret, expired: says nothing", _secret(), "x" * 16, NOW + dt.timedelta(days=9), None, "Unauthorized"),
    ("no secret object", None, "0123456789abcdef", NOW, None, "Unauthorized"),
    ("another type", {**_secret(), "type": "Opaque"}, "0123456789abcdef", NOW, None, "Unauthorized"),
    ("id mismatch", _secret(**{"token-id": "zzzzzz"}), "0123456789abcdef", NOW, None, "Unauthorized"),
    ("not for authentication", _secret(**{"usage-bootstrap-authentication": "false"}), "0123456789abcdef", NOW,
     None, "bootstrap token abcdef may not be used for authentication"),
    ("no expiration", _secret(expiration=None), "0123456789abcdef", NOW, None,
     "bootstrap token abcdef has no valid expiration"),
    ("expiration without zone", _secret(expiration="2099-01-01T00:00:00"), "0123456789abcdef", NOW, None,
     "bootstrap token abcdef has no valid expiration"),
    ("garbage expiration", _secret(expiration="tomorrow"), "0123456789abcdef", NOW, None,
     "bootstrap token abcdef has no valid expiration"),
])
def test_check(name, secret, presented, now, user, reason):
    verdict = bt.check("abcdef", presented, secret, now=now)
    assert verdict.user == user, name
    assert verdict.reason == reason, name
    if user:
        assert verdict.groups == ("system:bootstrappers",)


def test_check_keeps_only_bootstrapper_extra_groups():
    verdict = bt.check("abcdef", "0123456789abcdef",
                       _secret(**{"auth-extra-groups": "system:bootstrappers:workers,system:masters"}), now=NOW)
    assert verdict.groups == ("system:bootstrappers", "system:bootstrappers:workers")


def test_describe_rows_like_kubeadm_token_list():
    row = bt.describe(_secret(description="lab"), now=NOW)
    assert row == bt.TokenRow("abcdef.0123456789abcdef", "1h", "2025-05-01T13:00:00Z", "authentication", "lab")
    assert bt.describe(_secret(), now=NOW + dt.timedelta(hours=3)).ttl == "<invalid>"
    assert bt.describe({"type": "Opaque", "data": {}}, now=NOW) is None
    assert [bt.format_ttl(dt.timedelta(seconds=s)) for s in (86399, 3600, 3599, 60, 59, 0, -5)] == \
        ["23h", "1h", "59m", "1m", "59s", "<invalid>", "<invalid>"]


def test_read_token_file(tmp_path):
    path = tmp_path / "token"
    with pytest.raises(ValueError, match="does not exist"):
        bt.read_token_file(path)
    path.write_text("  abcdef.0123456789abcdef\n")
    assert bt.read_token_file(path) == "abcdef.0123456789abcdef"
    path.write_text("BOOTSTRAP_TOKEN=abcdef.0123456789abcdef\n")
    with pytest.raises(ValueError, match="does not hold a bootstrap token"):
        bt.read_token_file(path)


# -- the join decision --------------------------------------------------------------------------------

BOOT = auth.User("system:bootstrap:abcdef", (auth.BOOTSTRAPPERS,))
ADMIN = auth.User("admin", (auth.MASTERS,))
NODE = auth.User("system:node:n1", (auth.NODES,))
ANON_USER = auth.User("alice", ())


@pytest.mark.parametrize("user,node_exists,credential_exists,code,needle", [
    (BOOT, False, False, 0, ""),
    (ADMIN, False, False, 0, ""),
    (BOOT, True, True, 409, 'node "w1" is already registered'),
    (BOOT, True, False, 409, 'node "w1" is already registered'),
    (BOOT, False, True, 409, 'node "w1" was already issued a credential'),
    (ADMIN, True, True, 409, "kubectl delete node w1"),
    (ADMIN, False, True, 409, "kubectl delete --raw /kubepy/v1/nodecredentials/w1"),
    (NODE, False, False, 403, 'User "system:node:n1" cannot join nodes'),
    (ANON_USER, False, False, 403, 'User "alice" cannot join nodes'),
])
def test_decide_join(user, node_exists, credential_exists, code, needle):
    d = auth.decide_join(user, "w1", node_exists=node_exists, credential_exists=credential_exists)
    assert d.code == code and d.allowed == (code == 0)
    assert needle in d.message


def test_authenticator_keeps_digests_not_tokens():
    a = auth.TokenAuthenticator()
    a.add("s3cret-token", NODE)
    assert "s3cret-token" not in repr(a.__dict__)
    assert a.authenticate("Bearer s3cret-token") == NODE
    assert a.authenticate("bearer s3cret-token ") == NODE
    assert a.authenticate("Bearer s3cret-tokeN") is None
    assert a.authenticate("Basic s3cret-token") is None and a.authenticate(None) is None
    a.add_digest(auth.token_digest("other"), ADMIN)
    assert a.authenticate("Bearer other") == ADMIN
    a.remove_user(NODE.name)
    assert a.authenticate("Bearer s3cret-token") is None


def test_static_tokens_have_no_bootstrap_row_and_old_ones_are_ignored(tmp_path):
    tokens = auth.load_or_create_static_tokens(tmp_path)
    assert [u.name for u in tokens.values()] == ["admin"]
    assert stat.S_IMODE((tmp_path / "tokens.csv").stat().st_mode) == 0o600
    old = tmp_path / "old"
    old.mkdir()
    (old / "tokens.csv").write_text('adm1n,admin,admin,system:masters\n'
                                    'abcdef.0123456789abcdef,system:bootstrap:kubepy,bootstrap,system:bootstrappers\n')
    os.chmod(old / "tokens.csv", 0o644)
    tokens = auth.load_or_create_static_tokens(old)
    assert list(tokens) == ["adm1n"]
    assert stat.S_IMODE((old / "tokens.csv").stat().st_mode) == 0o600


# -- private files ------------------------------------------------------------------------------------

def test_private_files_and_dirs(tmp_path):
    old_umask = os.umask(0o022)
    try:
        d = private_dir(tmp_path / "a" / "b")
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755  # parents are not ours to narrow
        os.chmod(d, 0o755)
        private_dir(d)
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        f = d / "key"
        f.write_text("old")
        os.chmod(f, 0o644)
        write_private(f, "new")
        assert f.read_text() == "new" and stat.S_IMODE(f.stat().st_mode) == 0o600
        assert [p.name for p in d.iterdir()] == ["key"]  # no temporary file left behind
        g = d / "legacy"
        g.write_text("x")
        os.chmod(g, 0o644)
        narrow_file(g)
        assert stat.S_IMODE(g.stat().st_mode) == 0o600
        narrow_file(d / "missing")  # nothing to do, no error
    finally:
        os.umask(old_umask)


def test_sqlite_store_files_are_private(tmp_path):
    import asyncio

    from kubepy.store.sqlite import SQLiteStore

    async def main() -> None:
        store = SQLiteStore(str(tmp_path / "state.db"))
        try:
            await store.create("/registry/x", b"1")
        finally:
            await store.close()

    old_umask = os.umask(0o022)
    try:
        asyncio.run(main())
    finally:
        os.umask(old_umask)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "state.db" in files
    for name in files:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
