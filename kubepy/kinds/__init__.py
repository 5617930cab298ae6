"""The kinds kubepy serves, each described once, and the registry that holds them.

Role: everything that needs to know something about a kind asks the
registry: the API server (routing, discovery, OpenAPI, protobuf roots,
server-side tables, field selectors, defaulting and validation, what a
create or a status write may set, graceful deletion), the client library
(URL paths), the garbage collector and the namespace controller (which
kinds exist), and the in-memory fake API of the tests.

A built-in kind lives in its own module, ``kubepy/kinds/<group>/<kind>.py``
(as upstream's ``pkg/registry/<group>/<kind>/strategy.go``), which builds one
``Kind`` and registers it.  Its strategy points at the shared validation and
printer code it uses (``kinds.validation``, ``kinds.printers``), the way
upstream's strategies call ``pkg/apis/<group>/validation``.  Kinds can also be
registered and removed while the server runs (custom resources will be).

This package is shared vocabulary: it imports no HTTP, no store and no
component (``.importlinter``).  Problems with an object are raised as
``Invalid`` (field causes); the API server turns that into its 422 Status.
"""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "VERBS",
    "Kind",
    "Strategy",
    "Conversion",
    "Printer",
    "Invalid",
    "register",
    "unregister",
    "lookup",
    "by_kind",
    "by_plural",
    "all_kinds",
    "group_versions",
    "generation",
]

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def invalid_message(kind: str, name: str, causes: list[dict[str, str]], group: str = "") -> str:
    """Kubernetes' wording of a 422: ``Job.batch "x" is invalid: spec.y: …``, several
    problems as one ``[a, b]`` list (as apimachinery's aggregate error prints them)."""
    qualified = f"{kind}.{group}" if group else kind
    parts = list(dict.fromkeys(f"{c.get('field', '')}: {c['message']}".lstrip(": ") for c in causes))
    if not parts:
        return f'{qualified} "{name}" is invalid'
    return f'{qualified} "{name}" is invalid: ' + (parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]")


class Invalid(ValueError):
    """An object that fails validation: every problem, each a Status cause
    ``{"reason": "FieldValueInvalid"|…, "message": …, "field": "spec.x"}``."""

    def __init__(self, kind: str, name: str, causes: list[dict[str, str]], *, group: str = "") -> None:
        super().__init__(invalid_message(kind, name, causes, group))
        self.kind, self.name, self.causes, self.group = kind, name, causes, group


def _no_defaults(obj: dict, old: dict | None) -> None:
    return None


def _no_rules(obj: dict, old: dict | None, errs: list) -> None:
    return None


def _keep(obj: dict) -> None:
    return None


def _is_dns1123_subdomain(value: str) -> list[str]:
    from kubepy.kinds.validation import is_dns1123_subdomain
    return is_dns1123_subdomain(value)


@dataclass(frozen=True)
class Strategy:
    """How writes of a kind are checked and completed (upstream's RESTCreateStrategy et al.).

    ``default(obj, old)`` fills in defaults in place (``old`` is the stored
    object on update); ``validate(obj, old, errs)`` appends every problem to
    ``errs`` (a ``kinds.validation.Errs``); ``name_rule(name)`` returns the
    problems with a name.  ``prepare_create(obj)`` sets what a client may not
    choose on create (usually: no status).  ``deletion_grace(obj, requested)``
    is the grace period a delete gets (0: delete now); ``finalized_elsewhere(obj)``
    says an object whose last finalizer went must still wait (a running pod waits
    for its kubelet); ``on_delete(marked)`` changes an object being marked for
    deletion and returns True when it must stay (a namespace stays Terminating
    until its finalizers are done).
    """

    default: Callable[[dict, dict | None], None] = _no_defaults
    validate: Callable[[dict, dict | None, Any], None] = _no_rules
    name_rule: Callable[[str], list[str]] = _is_dns1123_subdomain
    prepare_create: Callable[[dict], None] = _keep
    deletion_grace: Callable[[dict, int | None], int] | None = None
    finalized_elsewhere: Callable[[dict], bool] | None = None
    on_delete: Callable[[dict], bool] | None = None
    kind: str = ""  # the kind errors name, when not the served kind's (a Scale, a Binding)
    group: str | None = None


@dataclass(frozen=True)
class Printer:
    """``kubectl get``'s columns (meta.k8s.io Table column definitions, in
    Kubernetes' order; priority 1 = ``-o wide``) and one object's cells."""

    columns: tuple[dict[str, Any], ...]
    cells: Callable[[dict, dt.datetime], list]


@dataclass(frozen=True, eq=False)
class Conversion:
    """How a served version that is not its kind's storage version is read and written.

    Objects are stored in the ``storage`` kind's version (both kinds share the
    plural, so the store prefix and watch cache); a read converts with
    ``from_storage``, a write converts the request's object with ``to_storage``
    and is then defaulted, validated and admitted as the storage kind (upstream
    converts through the internal version; kubepy converts directly)."""

    storage: Kind
    to_storage: Callable[[dict], dict]
    from_storage: Callable[[dict], dict]


def _generic_fields(obj: dict) -> dict[str, str]:
    from kubepy.meta.selectors import generic_fields
    return generic_fields(obj)


@dataclass(frozen=True, eq=False)
class Kind:
    """One served kind (one group/version/resource) and everything said about it."""

    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False  # status is written only through /status
    has_spec_generation: bool = False  # metadata.generation bumps on spec change
    model: str = ""  # the official Python client's class of the kind ("V1Pod"): its schema
    proto: str | None = None  # root message of kubepy.api.protobuf's schema, None if not decodable
    proto_schema: str = ""  # messages this kind adds to that schema (its generated.proto, as kubepy.api.protobuf reads it)
    api_types: tuple[str, ...] = ()  # type names of its API package other than core/v1 ("DeploymentSpec")
    strategy: Strategy = field(default_factory=Strategy)
    subresource_strategies: dict[str, Strategy] = field(default_factory=dict)
    printer: Printer | None = None
    fields: Callable[[dict], dict[str, str]] = _generic_fields  # field-selector values of an object
    # A create-only kind whose objects are answered, never stored (TokenReview, SubjectAccessReview):
    # no list/watch/get, no list model, printer or watch cache; the API server answers its create.
    virtual: bool = False
    # Custom resources (kinds.apiextensions.customresource): their store prefix (/registry/<group>/<plural>/,
    # shared by every version of one CRD) and their schema, CRD and scale paths.
    store_prefix: str = ""
    custom: Any = None
    # A version served by conversion from its storage version (autoscaling/v1 HorizontalPodAutoscaler).
    conversion: Conversion | None = None

    @property
    def verbs(self) -> list[str]:
        return ["create"] if self.virtual else VERBS

    # -- names -------------------------------------------------------------
    @property
    def singular(self) -> str:
        return self.custom.singular if self.custom is not None else self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def list_model(self) -> str:
        return f"{self.model}List"

    @property
    def qualified(self) -> str:
        """``deployments.apps``, ``pods``: how Kubernetes' messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def selectable_fields(self) -> frozenset[str]:
        return frozenset(self.fields({}))

    # -- store keys and URLs -------------------------------------------------
    @property
    def prefix(self) -> str:
        return self.store_prefix or f"/registry/{self.plural}/"

    def key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"{self.prefix}{namespace}/{name}"
        return f"{self.prefix}{name}"

    def list_prefix(self, namespace: str | None) -> str:
        if self.namespaced and namespace:
            return f"{self.prefix}{namespace}/"
        return self.prefix

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of a collection, an object or a subresource."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base

    def strategy_for(self, subresource: str | None) -> Strategy:
        if subresource and subresource in self.subresource_strategies:
            return self.subresource_strategies[subresource]
        return self.strategy

    def __repr__(self) -> str:
        return f"Kind({self.api_version}, {self.kind}, {self.plural})"


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_path: dict[tuple[str, str, str], Kind] = {}
        self._by_kind: dict[tuple[str, str], Kind] = {}
        self._by_plural: dict[str, Kind] = {}
        self.generation = 0

    def register(self, k: Kind) -> Kind:
        with self._lock:
            path = (k.group, k.version, k.plural)
            if path in self._by_path and self._by_path[path] is not k:
                raise ValueError(f"{k.qualified}/{k.version} is already registered")
            self._by_path[path] = k
            self._by_kind.setdefault((k.group, k.kind), k)
            self._by_plural.setdefault(k.plural, k)
            self.generation += 1
        return k

    def unregister(self, k: Kind) -> None:
        with self._lock:
            self._by_path.pop((k.group, k.version, k.plural), None)
            if self._by_kind.get((k.group, k.kind)) is k:
                del self._by_kind[(k.group, k.kind)]
                other = next((o for o in self._by_path.values() if (o.group, o.kind) == (k.group, k.kind)), None)
                if other is not None:
                    self._by_kind[(k.group, k.kind)] = other
            if self._by_plural.get(k.plural) is k:
                del self._by_plural[k.plural]
                other = next((o for o in self._by_path.values() if o.plural == k.plural), None)
                if other is not None:
                    self._by_plural[k.plural] = other
            self.generation += 1

    def all(self) -> tuple[Kind, ...]:
        with self._lock:
            return tuple(self._by_path.values())


_REGISTRY = _Registry()
_loaded = False
_loading = False
_load_lock = threading.RLock()


def _load_builtins() -> None:
    """Import every ``kubepy.kinds.<group>.<kind>`` module once: each registers its kind."""
    global _loaded, _loading
    if _loaded:
        return
    # Other threads wait on the lock until every kind is registered (marking it loaded first let a
    # second thread's by_plural("configmaps") see a half-filled registry); the loading thread itself
    # re-enters (a kind module asking for another) and gets what is registered so far, as before.
    with _load_lock:
        if _loaded or _loading:
            return
        _loading = True
        try:
            for group in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg):
                pkg = importlib.import_module(f"{__name__}.{group}")
                for mod in sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)):
                    importlib.import_module(f"{pkg.__name__}.{mod}")
            _loaded = True
        finally:
            _loading = False


def register(k: Kind) -> Kind:
    """Serve ``k`` (a built-in kind module calls this at import; custom resources at runtime)."""
    return _REGISTRY.register(k)


def unregister(k: Kind) -> None:
    _REGISTRY.unregister(k)


def all_kinds() -> tuple[Kind, ...]:
    """Every registered kind, built-ins in a stable order (group, then module name), then later ones."""
    _load_builtins()
    return _REGISTRY.all()


def lookup(group: str, version: str, plural: str) -> Kind | None:
    _load_builtins()
    return _REGISTRY._by_path.get((group, version, plural))


def by_kind(group: str, kind: str) -> Kind | None:
    _load_builtins()
    return _REGISTRY._by_kind.get((group, kind))


def by_plural(plural: str) -> Kind:
    _load_builtins()
    try:
        return _REGISTRY._by_plural[plural]
    except KeyError:
        raise KeyError(plural) from None


def by_api_version(api_version: str, kind: str) -> Kind | None:
    group, _, version = api_version.rpartition("/")
    k = by_kind(group, kind)
    if k is None or k.version == version:
        return k
    return next((o for o in all_kinds() if (o.group, o.version, o.kind) == (group, version, kind)), None)


def group_versions() -> dict[str, list[str]]:
    """{group: [versions]} for the named groups (not the core group)."""
    out: dict[str, list[str]] = {}
    for k in all_kinds():
        if k.group and k.version not in out.setdefault(k.group, []):
            out[k.group].append(k.version)
    return out


def generation() -> int:
    """Bumped by every register/unregister: caches derived from the registry compare it."""
    _load_builtins()
    return _REGISTRY.generation
