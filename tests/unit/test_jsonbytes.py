"""kubepy.jsonbytes: orjson's speed with the standard library's answers wherever orjson refuses."""

from __future__ import annotations

import json

import pytest

from kubepy import jsonbytes
from kubepy.api import bodies, errors


def test_compact_and_round_trips():
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "é", "labels": {}}, "spec": {"n": [1, 2.5, None]}}
    data = jsonbytes.dumps(obj)
    assert data == json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    assert jsonbytes.loads(data) == obj and jsonbytes.loads(data.decode()) == obj


def test_what_orjson_refuses_is_the_standard_librarys():
    big = {"n": 2 ** 70, 3: "int key"}
    assert jsonbytes.dumps(big) == json.dumps(big, separators=(",", ":")).encode()
    assert jsonbytes.loads(b'"\\ud800"') == "\ud800"              # a lone surrogate
    with pytest.raises(json.JSONDecodeError):
        jsonbytes.loads(b"{nope")


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": 1e400}', b'{"a": Infinity}', b"{nope"])
def test_request_bodies_orjson_refuses_are_400_as_before(raw):
    with pytest.raises(errors.BadRequest) as e:
        bodies.decode(raw, "application/json")
    assert "the body is not valid JSON" in e.value.message or "not a JSON number" in e.value.message


def test_request_bodies_are_checked_on_the_fast_path_too():
    deep = b"[" * (bodies.MAX_DEPTH + 2) + b"]" * (bodies.MAX_DEPTH + 2)
    with pytest.raises(errors.BadRequest) as e:
        bodies.decode(deep, "application/json")
    assert "nested too deeply" in e.value.message
    assert bodies.decode(b'{"a":[1,{"b":"c"}]}', "application/json") == {"a": [1, {"b": "c"}]}
