"""CEL as the API server uses it: compile against declared variables, evaluate, word the errors.

Role: the one place kubepy turns CEL text into a program (cel-python, ``celpy``)
and runs it, shared by CRD ``x-kubernetes-validations``
(kinds.apiextensions.customresource), webhook ``matchConditions``
(kinds.admissionregistration.webhooks, api.webhookadmission) and
ValidatingAdmissionPolicy (kinds.admissionregistration.validatingadmissionpolicy,
api.policyadmission).

celpy parses but does not type-check, so ``compile_expression`` adds the one
check upstream's checker makes that matters most to a user writing a
policy: every top-level name must be a declared variable
(``undeclared reference to 'x'``), with comprehension variables
(``all(c, …)``) and type names allowed. cel-go's string functions that
cel-python lacks (``join``, ``split``, ``lowerAscii``, …) are added here; a
caller may add more (admission's ``authorizer`` methods).

Errors::

    CELCompileError (ValueError)   the text does not compile; message as upstream's
                                   ``compilation failed: ERROR: <input>:L:C: …``
    CELEvalError   (ValueError)    evaluation failed; message as cel-go words the common
                                   cases (``no such key: x``)

Pure: no HTTP, no store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import celpy

__all__ = ["CELCompileError", "CELEvalError", "Program", "compile_expression", "to_cel", "references", "as_bool"]

_S = celpy.celtypes.StringType


def _join(items: Any, sep: Any = "") -> Any:
    return _S(str(sep).join(str(x) for x in items))


def _split(text: Any, sep: Any, limit: Any = -1) -> Any:
    n = int(limit)
    parts = str(text).split(str(sep)) if n < 0 else ([] if n == 0 else str(text).split(str(sep), n - 1))
    return celpy.celtypes.ListType([_S(p) for p in parts])


# The parts of Kubernetes' CEL string library (cel-go's ext.Strings) that cel-python lacks and policies use most.
_FUNCTIONS = {
    "join": _join,
    "split": _split,
    "lowerAscii": lambda s: _S(str(s).lower()),
    "upperAscii": lambda s: _S(str(s).upper()),
    "trim": lambda s: _S(str(s).strip()),
    "replace": lambda s, old, new, n=-1: _S(str(s).replace(str(old), str(new), int(n))),
    "indexOf": lambda s, sub: celpy.celtypes.IntType(str(s).find(str(sub))),
    "lastIndexOf": lambda s, sub: celpy.celtypes.IntType(str(s).rfind(str(sub))),
}
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type",
                         "dyn"})


# Upstream's per-expression runtime limit (apiserver/pkg/apis/cel PerCallLimit). kubepy counts one unit per
# step of cel-python's interpreter (every node it visits, macro bodies once per element): several steps per
# unit cel-go charges (about 5 on a nested comprehension), so the limit bites earlier than upstream's, never
# later. An expression that runs out is cancelled as upstream cancels it. (cel-python runs ~60k steps/s: an
# expression near the limit holds the API server's event loop for seconds.)
PER_CALL_LIMIT = 1_000_000
COST_EXCEEDED = "operation cancelled: actual cost limit exceeded"


class _CostExceeded(Exception):
    """Not a CEL error value: nothing in the expression may absorb it (``true || …``)."""


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit


class _BudgetedEvaluator(celpy.evaluation.Evaluator):
    def __init__(self, ast: Any, activation: Any, budget: _Budget) -> None:
        super().__init__(ast, activation=activation)
        self.budget = budget

    def _visit_tree(self, tree: Any) -> Any:
        self.budget.left -= 1
        if self.budget.left < 0:
            raise _CostExceeded(COST_EXCEEDED)
        return super()._visit_tree(tree)

    def sub_evaluator(self, ast: Any) -> Any:
        return _BudgetedEvaluator(ast, self.activation, self.budget)


class _BudgetedRunner(celpy.InterpretedRunner):
    limit = PER_CALL_LIMIT

    def evaluate(self, context: Any) -> Any:
        return _BudgetedEvaluator(self.ast, self.new_activation(), _Budget(self.limit)).evaluate(context)


_env: celpy.Environment | None = None


def _environment() -> celpy.Environment:
    """The one CEL environment, made on first use: building its parser takes about 1 s, which every
    process importing the kinds (each daemon, each `kubepy` command) would otherwise pay."""
    global _env
    if _env is None:
        _env = celpy.Environment(runner_class=_BudgetedRunner)
    return _env


class CELCompileError(ValueError):
    pass


class CELEvalError(ValueError):
    pass


@dataclass(frozen=True)
class Program:
    """One compiled expression and its text."""

    text: str
    program: Any

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        """The value (celpy's types), or CELEvalError worded as cel-go words it."""
        try:
            return self.program.evaluate(dict(activation))
        except _CostExceeded:
            raise CELEvalError(COST_EXCEEDED) from None
        except Exception as e:  # celpy raises CELEvalError, and Python's own errors from its functions
            raise CELEvalError(_eval_message(e)) from e


def _eval_message(e: Exception) -> str:
    text = str(e.args[0]) if e.args else type(e).__name__
    m = re.match(r"no such member in mapping: '(.*)'$", text)
    if m:
        return f"no such key: {m.group(1)}"
    return text


def _idents(tree: Any) -> tuple[set[str], set[str]]:
    """(top-level identifiers, names bound by comprehension macros) of a parsed expression."""
    used: set[str] = set()
    bound: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "primary" and node.children and getattr(node.children[0], "data", None) == "ident":
            used.add(str(node.children[0].children[0]))
        elif node.data == "member_dot_arg" and len(node.children) >= 3 and str(node.children[1]) in _MACROS:
            args = node.children[2]
            first = args.children[0] if getattr(args, "children", None) else None
            if first is not None:
                for sub in first.iter_subtrees():
                    if sub.data == "ident":
                        bound.add(str(sub.children[0]))
                        break
    return used, bound


def references(text: str) -> set[str]:
    """The top-level names an expression that compiles refers to (``object``, ``variables``, …)."""
    used, bound = _idents(_environment().compile(text))
    return used - bound


def compile_expression(text: str, variables: Iterable[str] | None = None,
                       functions: Mapping[str, Any] | None = None) -> Program:
    """Compile ``text``; with ``variables``, refuse names outside them as upstream's checker does.
    ``functions`` adds to the string library (the admission authorizer's methods)."""
    try:
        tree = _environment().compile(text)
    except Exception as e:  # celpy raises its parser's and lark's errors
        line, col = getattr(e, "line", None), getattr(e, "column", None)
        where = f"<input>:{line}:{col}: " if line is not None and col is not None else ""
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CELCompileError(f"compilation failed: ERROR: {where}Syntax error: {first}") from e
    if variables is not None:
        declared = set(variables) | _TYPE_NAMES
        used, bound = _idents(tree)
        for name in sorted(used - bound - declared):
            raise CELCompileError(f"compilation failed: ERROR: <input>:1:1: undeclared reference to '{name}' "
                                  "(in container '')")
    try:
        return Program(text, _environment().program(tree, functions={**_FUNCTIONS, **(functions or {})}))
    except Exception as e:
        raise CELCompileError(f"compilation failed: {e}") from e


def to_cel(value: Any) -> Any:
    """A JSON value as CEL sees it (null stays null)."""
    return celpy.json_to_cel(value)


def as_bool(value: Any) -> bool | None:
    """A CEL bool as Python's, None for any other type (upstream's checker insists on bool)."""
    if isinstance(value, (bool, celpy.celtypes.BoolType)):
        return bool(value)
    return None
