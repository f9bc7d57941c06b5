"""Reading a Grafana dashboard JSON for tests: its panels' and variables' PromQL, Grafana's variable
interpolation, and a strict jsonschema subset of the dashboard model.

Why here and not in the test: the subset is the contract a sidecar-provisioned dashboard of this chart keeps
(every data source is the ``${datasource}`` variable, so the dashboard needs no data source UID or ``__inputs``,
which a provisioned dashboard cannot resolve), and the parsing is the part a new dashboard test would reuse."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PANEL_TYPES = {"row", "stat", "bargauge", "table", "timeseries"}
# Grafana's built-in interval variables, for evaluating a panel's query outside Grafana (a wide rate window: a
# test's events happen once, early).
BUILTINS = {"__rate_interval": "5m", "__interval": "15s", "__range": "6h"}


@dataclass(frozen=True)
class Query:
    panel: str  # panel title, or "$name" for a variable
    ref: str
    expr: str


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Top-level panels and those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels") or []


def panel_queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(p["title"], t["refId"], t["expr"])
        for p in all_panels(dashboard)
        for t in p.get("targets") or []
    ]


LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>\w+)\s*\)\s*$", re.S)
QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$", re.S)


def variable_query(var: dict[str, Any]) -> tuple[str, str | None]:
    """A query variable's inner PromQL and, for ``label_values(selector, label)``, the label."""
    raw = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
    if m := LABEL_VALUES.match(raw):
        return m["selector"], m["label"]
    if m := QUERY_RESULT.match(raw):
        return m["expr"], None
    raise AssertionError(f"variable ${var['name']}: unsupported query {raw!r}")


def variable_queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(f"${v['name']}", label or "", expr)
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
        for expr, label in [variable_query(v)]
    ]


VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's interpolation of ``$var``, ``${var}``, ``${var:fmt}`` and ``[[var]]``; an unknown one fails."""

    def one(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        assert name in values, f"{expr!r} uses ${name}, which is neither a dashboard variable nor a built-in"
        return values[name]

    return VARIABLE.sub(one, expr)


# --- a strict subset of Grafana's dashboard model: what a provisioned dashboard must have ------------------

DATASOURCE_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}},
}
GRID_POS = {
    "type": "object",
    "additionalProperties": False,
    "required": ["x", "y", "w", "h"],
    "properties": {
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "h": {"type": "integer", "minimum": 1},
    },
}
TARGET = {
    "type": "object",
    "required": ["refId", "expr", "datasource"],
    "properties": {
        "refId": {"type": "string", "pattern": "^[A-Z]$"},
        "expr": {"type": "string", "minLength": 1},
        "datasource": DATASOURCE_REF,
        "instant": {"type": "boolean"},
        "range": {"type": "boolean"},
        "format": {"enum": ["time_series", "table", "heatmap"]},
        "legendFormat": {"type": "string"},
    },
}
PANEL = {
    "type": "object",
    "required": ["id", "type", "title", "gridPos"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "type": {"enum": sorted(PANEL_TYPES)},
        "title": {"type": "string", "minLength": 1},
        "gridPos": GRID_POS,
        "datasource": DATASOURCE_REF,
        "targets": {"type": "array", "items": TARGET},
    },
    "if": {"properties": {"type": {"const": "row"}}},
    "then": {"not": {"required": ["targets"]}},
    "else": {
        "required": ["datasource", "targets", "fieldConfig", "options"],
        "properties": {"targets": {"minItems": 1}},
    },
}
VARIABLE_SCHEMA = {
    "type": "object",
    "required": ["type", "name", "query"],
    "properties": {
        "type": {"enum": ["datasource", "query"]},
        "name": {"type": "string", "pattern": r"^\w+$"},
    },
    "if": {"properties": {"type": {"const": "query"}}},
    "then": {"required": ["datasource", "refresh"], "properties": {"datasource": DATASOURCE_REF}},
}
DASHBOARD_SCHEMA = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time"],
    "not": {"anyOf": [{"required": ["__inputs"]}, {"required": ["id"]}]},  # importable as provisioned
    "properties": {
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},  # datasource refs are {type, uid} objects
        "panels": {"type": "array", "minItems": 1, "items": PANEL},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {"list": {"type": "array", "items": VARIABLE_SCHEMA}},
        },
    },
}
