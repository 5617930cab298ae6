"""Tables for kubepy.meta.selectors: label and field selectors."""

from __future__ import annotations

import pytest

from kubepy.kinds import by_plural
from kubepy.meta.selectors import (
    SelectorError,
    generic_fields,
    label_selector_from_dict,
    parse_field_selector,
    parse_label_selector,
    pod_fields,
    validate_label_key,
    validate_label_value,
)



def allowed_fields(resource: str) -> frozenset[str]:
    """What each kind's module declares selectable (``Kind.fields``)."""
    return by_plural(resource).selectable_fields


def object_fields(resource: str, obj: dict) -> dict[str, str]:
    return by_plural(resource).fields(obj)


WEB = {"app": "web", "tier": "front", "env": "prod"}
DB = {"app": "db", "tier": "back"}
NONE: dict[str, str] = {}

# (selector, labels, expected match)
LABEL_MATCH_CASES = [
    ("", WEB, True),
    ("", None, True),
    ("app=web", WEB, True),
    ("app=web", DB, False),
    ("app==web", WEB, True),
    ("app!=web", WEB, False),
    ("app!=web", DB, True),
    ("app!=web", NONE, True),  # absent key satisfies !=
    ("app=web,tier=front", WEB, True),
    ("app=web,tier=back", WEB, False),
    ("app in (web,db)", DB, True),
    ("app in (web, api)", DB, False),
    ("app in (web)", NONE, False),
    ("app notin (web)", DB, True),
    ("app notin (web)", WEB, False),
    ("app notin (web)", NONE, True),
    ("env", WEB, True),
    ("env", DB, False),
    ("!env", DB, True),
    ("!env", WEB, False),
    ("app,!env", DB, True),
    ("  app = web ,  tier in ( front ) ", WEB, True),
    ("env=", {"env": ""}, True),  # empty value means "equals the empty string"
    ("env=", WEB, False),
    ("x in (a,)", {"x": ""}, True),  # a trailing comma adds the empty value, as in Kubernetes
    ("example.com/role=edge", {"example.com/role": "edge"}, True),
    ("replicas>2", {"replicas": "3"}, True),
    ("replicas>2", {"replicas": "2"}, False),
    ("replicas<2", {"replicas": "1"}, True),
    ("replicas<2", {"replicas": "x"}, False),
    ("replicas<2", NONE, False),
]


@pytest.mark.parametrize("text,labels,expected", LABEL_MATCH_CASES)
def test_label_selector_matches(text, labels, expected):
    assert parse_label_selector(text).matches(labels) is expected


# (selector, canonical string: requirements sorted by key, set values sorted)
LABEL_STRING_CASES = [
    ("", ""),
    ("b=2,a=1", "a=1,b=2"),
    ("app==web", "app=web"),
    ("env in (prod, dev, dev)", "env in (dev,prod)"),
    ("!legacy,app", "app,!legacy"),
    ("a!=b", "a!=b"),
    ("n>3", "n>3"),
]


@pytest.mark.parametrize("text,expected", LABEL_STRING_CASES)
def test_label_selector_string(text, expected):
    assert str(parse_label_selector(text)) == expected


LABEL_ERROR_CASES = [
    ("a b", "found 'b'"),
    ("app in web", "'('"),
    ("app in (web", "')'"),
    ("app in (a b)", "found 'b'"),
    ("!app=web", "found '='"),
    ("a=b=c", "found '='"),
    ("=b", "found '='"),
    (",", "found ','"),
    ("a,", "end of string"),
    ("-a=b", "invalid label key '-a'"),
    ("a=-b", "invalid label value '-b'"),
    ("a=" + "x" * 64, "invalid label value"),
    ("Bad.Prefix/a=b", "prefix part"),
    ("a/b/c=d", "at most one '/'"),
    ("/a=b", "prefix part must be non-empty"),
    ("n>x", "must be an integer"),
    ("a in ()x", "found 'x'"),
]


@pytest.mark.parametrize("text,fragment", LABEL_ERROR_CASES)
def test_label_selector_errors(text, fragment):
    with pytest.raises(SelectorError) as err:
        parse_label_selector(text)
    assert fragment in err.value.message


def test_double_equals_empty_value_is_legal():
    assert parse_label_selector("a==").matches({"a": ""})


KEY_CASES = [
    ("app", True),
    ("app.kubernetes.io/name", True),
    ("a_b-c.d", True),
    ("x" * 63, True),
    ("x" * 64, False),
    ("", False),
    ("-a", False),
    ("a-", False),
    ("a b", False),
    ("UPPER.example.com/x", False),
    ("example.com/", False),
]


@pytest.mark.parametrize("key,valid", KEY_CASES)
def test_validate_label_key(key, valid):
    assert (validate_label_key(key) is None) is valid


VALUE_CASES = [("", True), ("v1.2_3-x", True), ("x" * 63, True), ("x" * 64, False), ("a/b", False), ("_a", False)]


@pytest.mark.parametrize("value,valid", VALUE_CASES)
def test_validate_label_value(value, valid):
    assert (validate_label_value(value) is None) is valid


# metav1.LabelSelector → matcher: (selector, labels, expected)
DICT_SELECTOR_CASES = [
    (None, WEB, False),  # nil selector selects nothing
    ({}, WEB, True),  # empty selector selects everything
    ({"matchLabels": {"app": "web"}}, WEB, True),
    ({"matchLabels": {"app": "web"}}, DB, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "mid"]}]}, WEB, True),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, WEB, False),
    ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, DB, False),
    ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, DB, True),
    (
        {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
        WEB,
        True,
    ),
    (
        {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}]},
        WEB,
        False,
    ),
]


@pytest.mark.parametrize("sel,labels,expected", DICT_SELECTOR_CASES)
def test_label_selector_from_dict(sel, labels, expected):
    assert label_selector_from_dict(sel).matches(labels) is expected


DICT_SELECTOR_ERRORS = [
    {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
    {"matchExpressions": [{"key": "a", "operator": "In"}]},
    {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
    {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["x"]}]},
    {"matchExpressions": [{"operator": "Exists"}]},
    {"matchExpressions": "nope"},
    {"matchLabels": {"-bad": "x"}},
    {"matchLabels": {"a": "bad value"}},
    {"matchLabels": {"a": 1}},
    {"matchLabels": ["a"]},
    "app=web",
]


@pytest.mark.parametrize("sel", DICT_SELECTOR_ERRORS)
def test_label_selector_from_dict_errors(sel):
    with pytest.raises(ValueError):
        label_selector_from_dict(sel)


def test_label_selector_emptiness():
    assert parse_label_selector("").empty()
    assert not parse_label_selector("a").empty()
    assert not label_selector_from_dict(None).empty()
    assert label_selector_from_dict({}).empty()


# ---------------------------------------------------------------------------
# field selectors
# ---------------------------------------------------------------------------

RUNNING_ON_N1 = {"metadata.name": "p", "metadata.namespace": "default", "spec.nodeName": "n1", "status.phase": "Running"}
PENDING = {"metadata.name": "q", "metadata.namespace": "default", "spec.nodeName": "", "status.phase": "Pending"}

FIELD_MATCH_CASES = [
    ("", RUNNING_ON_N1, True),
    ("spec.nodeName=n1", RUNNING_ON_N1, True),
    ("spec.nodeName==n1", PENDING, False),
    ("spec.nodeName=", PENDING, True),  # the scheduler's "unscheduled pods" query
    ("spec.nodeName=", RUNNING_ON_N1, False),
    ("spec.nodeName!=", RUNNING_ON_N1, True),
    ("status.phase!=Running,status.phase!=Succeeded", PENDING, True),
    ("status.phase!=Running,status.phase!=Succeeded", RUNNING_ON_N1, False),
    ("metadata.name=p,metadata.namespace=default", RUNNING_ON_N1, True),
    ("metadata.name=p,metadata.namespace=other", RUNNING_ON_N1, False),
    ("status.podIP=", RUNNING_ON_N1, True),  # absent fields read as ""
    ("metadata.name=a\\,b", {"metadata.name": "a,b"}, True),
    ("metadata.name=a\\=b", {"metadata.name": "a=b"}, True),
    ("metadata.name=a\\\\b", {"metadata.name": "a\\b"}, True),
    ("metadata.name=p,", RUNNING_ON_N1, True),
]


@pytest.mark.parametrize("text,fields,expected", FIELD_MATCH_CASES)
def test_field_selector_matches(text, fields, expected):
    assert parse_field_selector(text, allowed=allowed_fields("pods")).matches(fields) is expected


FIELD_ERROR_CASES = [
    ("spec.foo=bar", "pods", "field label not supported: spec.foo"),
    ("spec.nodeName=n1", "configmaps", "field label not supported: spec.nodeName"),
    ("metadata.namespace=x", "nodes", "field label not supported: metadata.namespace"),
    ("spec.nodeName", "pods", "can't understand 'spec.nodeName'"),
    ("=x", "pods", "field name is empty"),
    ("metadata.name=a=b", "pods", "unescaped '='"),
    ("metadata.name=a\\x", "pods", "invalid escape"),
    ("metadata.name=a\\", "pods", "trailing backslash"),
]


@pytest.mark.parametrize("text,resource,fragment", FIELD_ERROR_CASES)
def test_field_selector_errors(text, resource, fragment):
    with pytest.raises(SelectorError) as err:
        parse_field_selector(text, allowed=allowed_fields(resource))
    assert fragment in err.value.message


def test_field_selector_string_round_trips():
    text = "metadata.name=a\\,b,spec.nodeName!=n1"
    sel = parse_field_selector(text, allowed=allowed_fields("pods"))
    assert str(sel) == text
    assert parse_field_selector(str(sel), allowed=allowed_fields("pods")) == sel


ALLOWED_CASES = [
    ("pods", "spec.nodeName", True),
    ("pods", "status.nominatedNodeName", True),
    ("pods", "spec.serviceAccountName", True),
    ("pods", "spec.unschedulable", False),
    ("nodes", "spec.unschedulable", True),
    ("nodes", "metadata.name", True),
    ("events", "involvedObject.uid", True),
    ("events", "reportingComponent", True),
    ("secrets", "type", True),
    ("namespaces", "status.phase", True),
    ("configmaps", "metadata.namespace", True),
    ("configmaps", "type", False),
    ("deployments", "metadata.name", True),
]


@pytest.mark.parametrize("resource,field,expected", ALLOWED_CASES)
def test_allowed_fields(resource, field, expected):
    assert (field in allowed_fields(resource)) is expected


POD = {
    "metadata": {"name": "p", "namespace": "ns"},
    "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
             "serviceAccountName": "sa", "hostNetwork": True},
    "status": {"phase": "Running", "podIPs": [{"ip": "10.1.0.5"}], "nominatedNodeName": "n2"},
}


def test_pod_fields():
    assert pod_fields(POD) == {
        "metadata.name": "p",
        "metadata.namespace": "ns",
        "spec.nodeName": "n1",
        "spec.restartPolicy": "Always",
        "spec.schedulerName": "default-scheduler",
        "spec.serviceAccountName": "sa",
        "spec.hostNetwork": "true",
        "status.phase": "Running",
        "status.podIP": "10.1.0.5",
        "status.nominatedNodeName": "n2",
    }
    # every computed field is selectable, and vice versa
    assert set(pod_fields(POD)) == set(allowed_fields("pods"))


def test_pod_fields_of_a_fresh_pod_are_empty_strings():
    fields = pod_fields({"metadata": {"name": "p", "namespace": "ns"}, "spec": {}})
    assert fields["spec.nodeName"] == "" and fields["status.phase"] == "" and fields["spec.hostNetwork"] == "false"


EVENT = {
    "metadata": {"name": "e", "namespace": "ns"},
    "involvedObject": {"kind": "Pod", "namespace": "ns", "name": "p", "uid": "u", "apiVersion": "v1",
                       "resourceVersion": "7", "fieldPath": "spec.containers{app}"},
    "reason": "Pulled",
    "reportingComponent": "kubelet",
    "type": "Normal",
}

OBJECT_FIELD_CASES = [
    ("pods", POD, "status.podIP", "10.1.0.5"),
    ("nodes", {"metadata": {"name": "n1"}, "spec": {"unschedulable": True}}, "spec.unschedulable", "true"),
    ("nodes", {"metadata": {"name": "n1"}}, "spec.unschedulable", "false"),
    ("events", EVENT, "involvedObject.fieldPath", "spec.containers{app}"),
    ("events", EVENT, "source", "kubelet"),  # falls back to reportingComponent
    ("events", {**EVENT, "source": {"component": "scheduler"}}, "source", "scheduler"),
    ("secrets", {"metadata": {"name": "s"}, "type": "kubernetes.io/tls"}, "type", "kubernetes.io/tls"),
    ("namespaces", {"metadata": {"name": "kube-system"}, "status": {"phase": "Active"}}, "status.phase", "Active"),
    ("configmaps", {"metadata": {"name": "c", "namespace": "ns"}}, "metadata.namespace", "ns"),
    ("replicasets", {"metadata": {"name": "r"}, "status": {"replicas": 3}}, "status.replicas", "3"),
]


@pytest.mark.parametrize("resource,obj,field,expected", OBJECT_FIELD_CASES)
def test_object_fields(resource, obj, field, expected):
    fields = object_fields(resource, obj)
    assert fields[field] == expected
    assert set(fields) <= set(allowed_fields(resource))


def test_events_fields_cover_the_selectable_set():
    assert set(object_fields("events", EVENT)) == set(allowed_fields("events"))


def test_generic_fields():
    assert generic_fields({"metadata": {"name": "x"}}) == {"metadata.name": "x", "metadata.namespace": ""}


def test_end_to_end_field_filter():
    pods = [POD, {"metadata": {"name": "q", "namespace": "ns"}, "spec": {}, "status": {"phase": "Pending"}}]
    sel = parse_field_selector("spec.nodeName=", allowed=allowed_fields("pods"))
    assert [p["metadata"]["name"] for p in pods if sel.matches(object_fields("pods", p))] == ["q"]
