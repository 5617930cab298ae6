"""Tables for kubepy.api.bodies: what a request body may hold, and the 4xx for what it may not."""

from __future__ import annotations

import pytest
import yaml

from kubepy.api import bodies, errors


def nested(depth: int, leaf: object = "x") -> object:
    """A value with *depth* levels of containers (alternating maps and lists)."""
    v = leaf
    for i in range(depth):
        v = {"a": v} if i % 2 else [v]
    return v


def nested_json(depth: int) -> bytes:
    """The JSON text of ``nested(depth)``, built as text: pytest's own stack
    is too deep for json.dumps of a ~1000-level value."""
    text = '"x"'
    for i in range(depth):
        text = '{"a":' + text + "}" if i % 2 else "[" + text + "]"
    return text.encode()


def bomb(levels: int) -> bytes:
    """A "billion laughs" YAML document: 9**levels strings from a few hundred bytes."""
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: bomb}",
             'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines).encode()


ACCEPTED = [
    ("json object", b'{"a": [1, 2.5, true, null, "x"]}', "application/json", {"a": [1, 2.5, True, None, "x"]}),
    ("no content type is JSON", b'{"a": 1}', "", {"a": 1}),
    ("+json suffix", b'[{"op": "add"}]', "application/json-patch+json", [{"op": "add"}]),
    ("valid surrogate pair", b'{"a": "\\ud83d\\ude00"}', "application/json", {"a": "\U0001F600"}),
    ("int64 extremes", b'{"a": 9223372036854775807, "b": -9223372036854775808}', "application/json",
     {"a": 2**63 - 1, "b": -2**63}),
    ("depth at the limit", nested_json(bodies.MAX_DEPTH), "application/json",
     nested(bodies.MAX_DEPTH)),
    ("yaml", b"a: [1, b]\nc: {d: null}\n", "application/yaml", {"a": [1, "b"], "c": {"d": None}}),
    ("yaml timestamps stay strings", b"t: 2024-01-02T03:04:05Z\nd: 2024-01-02\n", "application/yaml",
     {"t": "2024-01-02T03:04:05Z", "d": "2024-01-02"}),
    ("yaml keys become strings", b"1: a\ntrue: b\n~: c\n1.5: d\n", "text/yaml",
     {"1": "a", "true": "b", "null": "c", "1.5": "d"}),
    ("yaml few aliases", b"a: &x {k: v}\nb: *x\nc: *x\n", "application/yaml",
     {"a": {"k": "v"}, "b": {"k": "v"}, "c": {"k": "v"}}),
    ("yaml merge key", b"base: &b {x: 1}\nnew: {<<: *b, y: 2}\n", "application/yaml",
     {"base": {"x": 1}, "new": {"x": 1, "y": 2}}),
]


@pytest.mark.parametrize("name,raw,ctype,want", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_decode_accepts(name, raw, ctype, want):
    assert bodies.decode(raw, ctype) == want


REFUSED = [
    # (name, body, content type, error class, words the message must hold)
    ("empty", b"  \n", "application/json", errors.BadRequest, "empty"),
    ("not json", b"{nope", "application/json", errors.BadRequest, "not valid JSON"),
    ("not utf-8", b'{"a": "\xff"}', "application/json", errors.BadRequest, "not valid JSON"),
    ("one level too deep", nested_json(bodies.MAX_DEPTH + 1), "application/json",
     errors.BadRequest, "more than 200 levels"),
    ("970 levels", nested_json(970), "application/json", errors.BadRequest, "nested too deeply"),
    ("deeper than the C decoder goes", b"[" * 100_000 + b"]" * 100_000, "application/json",
     errors.BadRequest, "more than 200 levels"),
    ("lone surrogate", b'{"data": {"a": "\\ud800"}}', "application/json", errors.BadRequest,
     "lone UTF-16 surrogate (\\ud800) at .data.a"),
    ("lone low surrogate in a key", b'{"m": {"\\udc00x": 1}}', "application/json", errors.BadRequest,
     "surrogate (\\udc00) at .m"),
    ("NaN", b'{"a": NaN}', "application/json", errors.BadRequest, "NaN is not a JSON number"),
    ("Infinity", b'{"a": -Infinity}', "application/json", errors.BadRequest, "not a JSON number"),
    ("float overflow", b'{"a": 1e400}', "application/json", errors.BadRequest, "out of range for a float64"),
    ("integer beyond float64", b'{"a": 1' + b"0" * 400 + b"}", "application/json", errors.BadRequest,
     "at .a that is out of range"),
    ("yaml syntax", b"a: [", "application/yaml", errors.BadRequest, "not valid YAML"),
    ("yaml two documents", b"a: 1\n---\nb: 2\n", "application/yaml", errors.BadRequest, "not valid YAML"),
    ("yaml python tag", b"!!python/object:os.system {}", "application/yaml", errors.BadRequest, "not valid YAML"),
    ("yaml composite key", b"? [a]\n: x\n", "application/yaml", errors.BadRequest, "keys must be strings"),
    ("yaml set", b"s: !!set {a, b}", "application/yaml", errors.BadRequest, "a set at .s"),
    ("yaml .inf", b"a: .inf", "application/yaml", errors.BadRequest, "not a finite float64"),
    ("yaml alias to itself", b"a: &x [1, *x]", "application/yaml", errors.BadRequest, "alias to itself"),
    ("yaml billion laughs", bomb(9), "application/yaml", errors.BadRequest,
     "yaml: document contains excessive aliasing"),
    ("yaml deep", b"a: " + b"[" * 300 + b"]" * 300, "application/yaml", errors.BadRequest, "nested"),
    ("unsupported type", b"<a/>", "application/xml", errors.UnsupportedMedia, "application/xml"),
    ("bad protobuf", b"k8s\x00\xff", "application/vnd.kubernetes.protobuf", errors.BadRequest, "protobuf"),
]


@pytest.mark.parametrize("name,raw,ctype,err,words", REFUSED, ids=[c[0] for c in REFUSED])
def test_decode_refuses(name, raw, ctype, err, words):
    with pytest.raises(err) as e:
        bodies.decode(raw, ctype)
    assert words in e.value.message
    assert 400 <= e.value.code < 500


def test_yaml_that_expands_past_the_body_limit_is_too_large():
    # Few aliases (within go-yaml's ratio) but each names a 200 KiB string: 4 MiB expanded.
    text = "a: &s " + "x" * 200_000 + "\nb: [" + ", ".join(["*s"] * 20) + "]\n"
    with pytest.raises(errors.RequestTooLarge) as e:
        bodies.decode(text.encode(), "application/yaml")
    assert e.value.code == 413 and "limit is 3145728" in e.value.message


ALIAS_RATIO = [
    (1_000, 0.99),
    (400_000, 0.99),
    (2_200_000, 0.99 - 0.89 * 0.5),
    (4_000_000, 0.10),
    (10**12, 0.10),
]


@pytest.mark.parametrize("count,ratio", ALIAS_RATIO)
def test_allowed_alias_ratio_is_go_yamls(count, ratio):
    assert bodies.allowed_alias_ratio(count) == pytest.approx(ratio)


def test_yaml_expansion_counts_without_expanding():
    node = yaml.compose(bomb(30).decode(), Loader=yaml.SafeLoader)
    distinct, expanded, size = bodies.yaml_expansion(node)
    assert distinct < 400
    assert expanded > 9**30 and size > 9**30  # computed, never built


CHECKED = [
    ("patched object too deep", nested(bodies.MAX_DEPTH + 1), "more than 200 levels"),
    ("bytes are not JSON", {"a": [b"x"]}, "a bytes at .a[0]"),
    ("non-string key", {"a": {1: "x"}}, "the key 1 at .a"),
    ("nan", {"a": {"b": float("nan")}}, "at .a.b"),
]


@pytest.mark.parametrize("name,value,words", CHECKED, ids=[c[0] for c in CHECKED])
def test_check_value(name, value, words):
    with pytest.raises(errors.BadRequest) as e:
        bodies.check_value(value, "the patched object")
    assert e.value.message.startswith("the patched object")
    assert words in e.value.message
