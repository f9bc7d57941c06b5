"""Label and field selectors, parsed once per request (kmock ignores them; kopf and kubectl rely on them)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_./-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*$")


class SelectorError(ValueError):
    """An unparseable selector (the API server answers 400 BadRequest)."""


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside parentheses (set-based terms contain commas)."""
    terms: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return [term for term in terms if term.strip()]


def _label_term(term: str) -> Callable[[Mapping[str, str]], bool]:
    if match := _SET_RE.match(term):
        _, key, op, raw = match.groups()
        values = {value.strip() for value in raw.split(",") if value.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _CMP_RE.match(term):
        key, op, value = match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS_RE.match(term):
        negated, key = match.groups()
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise SelectorError(f"unable to parse requirement: {term!r}")


def label_selector(text: str | None) -> Predicate:
    """``a=b,c!=d,e in (x,y),f,!g`` -> a predicate on an object."""
    terms = [_label_term(term) for term in _split_terms(text or "")]

    def check(obj: Mapping[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(term(labels) for term in terms)

    return check


def _dig(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_selector(text: str | None) -> Predicate:
    """``metadata.name=x,metadata.namespace!=y,involvedObject.uid=z`` -> a predicate on an object."""
    terms: list[tuple[str, bool, str]] = []
    for term in _split_terms(text or ""):
        match = _CMP_RE.match(term)
        if not match:
            raise SelectorError(f"invalid field selector: {term!r}")
        path, op, value = match.groups()
        terms.append((path, op != "!=", value))

    def check(obj: Mapping[str, Any]) -> bool:
        return all((_dig(obj, path) == value) == equal for path, equal, value in terms)

    return check


def selected_name(text: str | None) -> str | None:
    """The name a ``metadata.name=`` field selector pins, if any (lets watches of one object be cheap)."""
    for term in _split_terms(text or ""):
        match = _CMP_RE.match(term)
        if match and match.group(1) == "metadata.name" and match.group(2) != "!=":
            return match.group(3)
    return None
