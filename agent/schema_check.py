"""A small JSON Schema (2020-12) validator for the keywords agent/schemas/model.schema.json uses.

The agent checks model sidecars against that schema file at load, but the ``jsonschema`` package
is a test dependency only (heavy for a Pi). This reads the same file and implements just its
keywords; a keyword it does not know is an error when the schema is loaded, so the schema cannot
grow past what the agent checks. tests/agent/test_model_schema.py holds it to ``jsonschema``'s
verdict on every shipped sidecar and on many damaged copies of them.

It reports the first problem, as a sentence for a person: ``missing key `decoding.nms```.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

SCHEMAS = Path(__file__).resolve().parent / "schemas"

# Keywords that only document: nothing to check.
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description", "examples", "default"})
_JSON_TYPES = {"object": "an object", "array": "an array", "string": "a string", "number": "a number",
               "integer": "an integer", "boolean": "true or false", "null": "null"}


class SchemaError(Exception):
    """The schema file uses a keyword this validator does not implement (a developer's error)."""


@dataclass(frozen=True)
class Problem:
    """Why an instance does not match: ``path`` is the dotted key path (``decoding.nms``), ``text``
    the whole sentence."""

    path: str
    text: str

    def __str__(self) -> str:
        return self.text


@lru_cache(maxsize=None)
def load(name: str) -> Dict[str, Any]:
    """``agent/schemas/<name>.schema.json``, checked to use only the keywords implemented here."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    _check_keywords(schema, "#")
    return schema


def first_problem(instance: Any, schema: Mapping[str, Any]) -> Optional[Problem]:
    """The first way ``instance`` fails ``schema`` (depth first, in the schema's key order), or None."""
    return _Validator(schema).check(instance, schema, [])


# Python type -> JSON type, bool before int (a bool is an int to Python, never to JSON).
_PY_TO_JSON = ((type(None), "null"), (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
               (list, "array"), (dict, "object"))


def _json_type(value: Any) -> str:
    return next((name for py, name in _PY_TO_JSON if isinstance(value, py)), type(value).__name__)


def _is_type(value: Any, name: str) -> bool:
    kind = _json_type(value)
    if name == "number":
        return kind in ("integer", "number")
    if name == "integer":  # JSON Schema: 2.0 is an integer too
        return kind == "integer" or (kind == "number" and float(value).is_integer())
    return kind == name


def _dotted(path: List[str]) -> str:
    return ".".join(path) or "(the whole file)"


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Validator:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise SchemaError(f"only local $ref is supported, not {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    def check(self, value: Any, schema: Any, path: List[str]) -> Optional[Problem]:
        if schema is True:
            return None
        if schema is False:
            return Problem(_dotted(path), f"unexpected key `{_dotted(path)}`")
        for key, arg in schema.items():
            rule = _RULES.get(key)
            problem = rule(self, value, arg, path, schema) if rule else None
            if problem is not None:
                return problem
        return None


Rule = Callable[[_Validator, Any, Any, List[str], Mapping[str, Any]], Optional[Problem]]


def _ref(v: _Validator, value: Any, arg: str, path: List[str], _s: Mapping[str, Any]) -> Optional[Problem]:
    return v.check(value, v.resolve(arg), path)


def _type(v: _Validator, value: Any, arg: Any, path: List[str], _s: Mapping[str, Any]) -> Optional[Problem]:
    names = [arg] if isinstance(arg, str) else list(arg)
    if any(_is_type(value, n) for n in names):
        return None
    want = " or ".join(_JSON_TYPES[n] for n in names)
    return Problem(_dotted(path), f"`{_dotted(path)}` is {_JSON_TYPES.get(_json_type(value), _json_type(value))},"
                                  f" expected {want}")


def _required(v: _Validator, value: Any, arg: List[str], path: List[str], _s: Mapping[str, Any]) -> Optional[Problem]:
    if not isinstance(value, dict):
        return None
    for key in arg:
        if key not in value:
            where = _dotted(path + [key])
            return Problem(where, f"missing key `{where}`")
    return None


def _first(v: _Validator, checks: Iterable[Tuple[Any, Any, List[str]]]) -> Optional[Problem]:
    """The first problem among (value, schema, path) checks, in order."""
    for value, schema, path in checks:
        problem = v.check(value, schema, path)
        if problem is not None:
            return problem
    return None


def _properties(v: _Validator, value: Any, arg: Mapping[str, Any], path: List[str],
                _s: Mapping[str, Any]) -> Optional[Problem]:
    if not isinstance(value, dict):
        return None
    return _first(v, ((value[key], sub, path + [key]) for key, sub in arg.items() if key in value))


def _additional(v: _Validator, value: Any, arg: Any, path: List[str], schema: Mapping[str, Any]) -> Optional[Problem]:
    if not isinstance(value, dict):
        return None
    named = schema.get("properties", {})
    return _first(v, ((item, arg, path + [str(key)]) for key, item in value.items() if key not in named))


def _items(v: _Validator, value: Any, arg: Any, path: List[str], _s: Mapping[str, Any]) -> Optional[Problem]:
    if not isinstance(value, list):
        return None
    where = path[-1] if path else ""
    return _first(v, ((item, arg, path[:-1] + [f"{where}[{i}]"]) for i, item in enumerate(value)))


def _count(kind: str, least: bool) -> Rule:
    """minItems / maxItems / minProperties / minLength."""

    def rule(v: _Validator, value: Any, arg: int, path: List[str], _s: Mapping[str, Any]) -> Optional[Problem]:
        if not isinstance(value, {"items": list, "keys": dict, "characters": str}[kind]):
            return None
        n = len(value)
        if (n < arg) if least else (n > arg):
            bound = "at least" if least else "at most"
            return Problem(_dotted(path), f"`{_dotted(path)}` has {n} {kind}, expected {bound} {arg}")
        return None

    return rule


def _bound(symbol: str, ok: Callable[[float, float], bool]) -> Rule:
    """minimum / maximum / exclusiveMinimum: the sentence reads ``output.temperature must be > 0``."""

    def rule(v: _Validator, value: Any, arg: float, path: List[str], _s: Mapping[str, Any]) -> Optional[Problem]:
        if not _is_type(value, "number") or ok(float(value), float(arg)):
            return None
        return Problem(_dotted(path), f"{_dotted(path)} must be {symbol} {arg:g}, not {_show(value)}")

    return rule


def _const(v: _Validator, value: Any, arg: Any, path: List[str], s: Mapping[str, Any]) -> Optional[Problem]:
    return _enum(v, value, [arg], path, s)


def _enum(v: _Validator, value: Any, arg: List[Any], path: List[str], _s: Mapping[str, Any]) -> Optional[Problem]:
    if any(_same(value, a) for a in arg):
        return None
    want = _show(arg[0]) if len(arg) == 1 else "one of " + ", ".join(_show(a) for a in arg)
    return Problem(_dotted(path), f"`{_dotted(path)}` is {_show(value)}, expected {want}")


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    return _json_type(a) == _json_type(b) and a == b or (
        _is_type(a, "number") and _is_type(b, "number") and a == b)


def _pattern(v: _Validator, value: Any, arg: str, path: List[str], _s: Mapping[str, Any]) -> Optional[Problem]:
    if not isinstance(value, str) or re.search(arg, value):
        return None
    return Problem(_dotted(path), f"`{_dotted(path)}` is {_show(value)}, which does not match {arg}")


def _all_of(v: _Validator, value: Any, arg: List[Any], path: List[str], _s: Mapping[str, Any]) -> Optional[Problem]:
    return _first(v, ((value, sub, path) for sub in arg))


def _if(v: _Validator, value: Any, arg: Any, path: List[str], schema: Mapping[str, Any]) -> Optional[Problem]:
    if v.check(value, arg, path) is None:
        return v.check(value, schema.get("then", True), path)
    return v.check(value, schema.get("else", True), path)


_RULES: Dict[str, Rule] = {
    "$ref": _ref,
    "type": _type,
    "const": _const,
    "enum": _enum,
    "required": _required,
    "properties": _properties,
    "additionalProperties": _additional,
    "items": _items,
    "minItems": _count("items", True),
    "maxItems": _count("items", False),
    "minProperties": _count("keys", True),
    "minLength": _count("characters", True),
    "minimum": _bound(">=", lambda x, b: x >= b),
    "maximum": _bound("<=", lambda x, b: x <= b),
    "exclusiveMinimum": _bound(">", lambda x, b: x > b),
    "pattern": _pattern,
    "allOf": _all_of,
    "if": _if,
}
# Read by the rule of another keyword ("if" reads "then"/"else").
_PARTNERS = frozenset({"then", "else"})


def _check_keywords(schema: Any, where: str) -> None:
    """Raise SchemaError for a keyword the validator would silently skip."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: a schema must be an object or a boolean")
    for key, arg in schema.items():
        if key not in _RULES and key not in _PARTNERS and key not in _ANNOTATIONS:
            raise SchemaError(f"{where}: keyword {key!r} is not implemented by agent/schema_check.py")
        if key in ("properties", "$defs"):
            for name, sub in arg.items():
                _check_keywords(sub, f"{where}/{key}/{name}")
        elif key in ("additionalProperties", "items", "if", "then", "else"):
            _check_keywords(arg, f"{where}/{key}")
        elif key == "allOf":
            for i, sub in enumerate(arg):
                _check_keywords(sub, f"{where}/allOf/{i}")


__all__ = ["Problem", "SchemaError", "first_problem", "load"]
