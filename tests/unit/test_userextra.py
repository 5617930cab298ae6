"""A user's extra keys in header names (kubepy.meta.userextra), as client-go escapes and the apiserver unescapes."""

from __future__ import annotations

import pytest

from kubepy.meta.userextra import escape_extra_key, unescape_extra_key


@pytest.mark.parametrize("key,header", [
    ("scopes", "scopes"),
    ("authentication.kubernetes.io/credential-id", "authentication.kubernetes.io%2Fcredential-id"),
    ("authentication.kubernetes.io/pod-name", "authentication.kubernetes.io%2Fpod-name"),
    ("100%", "100%25"),                 # "%" itself, so decoding gives back exactly the key
    ("a b:c", "a%20b%3Ac"),
    ("clé", "cl%C3%A9"),                # UTF-8 bytes
    ("!#$&'*+-.^_`|~", "!#$&'*+-.^_`|~"),  # the token characters stay
])
def test_escaped_and_back(key: str, header: str) -> None:
    assert escape_extra_key(key) == header
    assert unescape_extra_key(header) == key


@pytest.mark.parametrize("header,key", [
    ("Authentication.Kubernetes.Io%2fCredential-Id", "authentication.kubernetes.io/credential-id"),  # any case
    ("Scopes", "scopes"),
    ("bad%zzescape", "bad%zzescape"),   # kept as it came, lower-cased
    ("trailing%2", "trailing%2"),
    ("not-utf8%ff", "not-utf8%ff"),
])
def test_received_header_names(header: str, key: str) -> None:
    assert unescape_extra_key(header) == key
