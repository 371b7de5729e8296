#!/usr/bin/env python3
"""Check every PromQL expression of the Grafana dashboard and the alert rules.

Each expression must parse (promql-parser, the Rust PromQL parser's Python
binding) and may only select metrics that imapmux exports, as listed from a
live scrape by tests/observability.rs (target/observability/metric-names.txt
and metric-types.txt; `_bucket`, `_sum` and `_count` are accepted for
histograms only). Dashboard queries must also filter on the `job` and
`instance` template variables and use the `${datasource}` variable; every
exported metric must appear on the dashboard.

Usage: check_promql.py --names FILE --types FILE --dashboard FILE --rules FILE
Exit status 1, listing every problem, when anything is wrong.
"""

import argparse
import json
import re
import sys

import promql_parser
import yaml

# Grafana's built-in interval variables, valid where PromQL wants a duration.
GRAFANA_DURATIONS = re.compile(
    r"\$(?:\{__(?:rate_interval|interval|range)(?::\w+)?\}|__(?:rate_interval|interval|range)\b)"
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def load_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def selectors(expr):
    """Every VectorSelector in the expression (matrix selectors included)."""
    found = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(expr, visit)
    return found


def matcher_list(vs):
    return list(vs.matchers.matchers) + [m for group in vs.matchers.or_matchers for m in group]


def metric_name(vs):
    if vs.name:
        return vs.name
    for m in matcher_list(vs):
        if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal:
            return m.value
    return None


class Checker:
    def __init__(self, names, types):
        self.names = set(names)
        self.types = types
        self.problems = []
        self.used = set()
        self.expressions = 0
        self.selectors = 0

    def problem(self, where, text):
        self.problems.append(f"{where}: {text}")

    def known(self, name):
        """The exported family a selected name belongs to, or None."""
        if name in self.names:
            return name
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                if base in self.names and self.types.get(base) in ("histogram", "summary"):
                    return base
        return None

    def expression(self, where, text, need_filters):
        self.expressions += 1
        query = GRAFANA_DURATIONS.sub("5m", text)
        try:
            expr = promql_parser.parse(query)
        except Exception as e:  # the parser raises ValueError; be loud on anything
            self.problem(where, f"does not parse: {e}\n    {text}")
            return
        sels = selectors(expr)
        if not sels:
            self.problem(where, f"selects no metric: {text}")
        for vs in sels:
            self.selectors += 1
            name = metric_name(vs)
            if name is None:
                self.problem(where, f"a selector without a metric name: {text}")
                continue
            family = self.known(name)
            if family is None:
                self.problem(where, f"{name!r} is not a metric imapmux exports")
            else:
                self.used.add(family)
            if need_filters:
                have = matcher_list(vs)
                for label in ("job", "instance"):
                    want = f"${label}"
                    if not any(
                        m.name == label and m.op == promql_parser.MatchOp.Re and m.value == want
                        for m in have
                    ):
                        self.problem(where, f'{name} lacks {label}=~"${label}": {text}')


def panels_of(panels):
    for p in panels:
        yield p
        yield from panels_of(p.get("panels", []))


def check_dashboard(c, path):
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        c.problem(path, "needs a template variable `datasource` of type datasource (prometheus)")
    for name in ("job", "instance"):
        v = variables.get(name)
        if not v or v.get("type") != "query":
            c.problem(path, f"needs a query template variable `{name}`")
            continue
        if v.get("datasource") != DATASOURCE:
            c.problem(path, f"variable {name} must use the ${{datasource}} variable")
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q or "")
        if not m or m.group(2) != name:
            c.problem(path, f"variable {name}: expected label_values(<selector>, {name}), got {q!r}")
        else:
            c.expression(f"{path}: variable {name}", m.group(1), need_filters=False)
    n_targets = 0
    for p in panels_of(dash.get("panels", [])):
        if p.get("type") == "row":
            continue
        where = f"{path}: panel {p.get('title')!r}"
        if p.get("datasource") != DATASOURCE:
            c.problem(where, "datasource must be the ${datasource} variable")
        targets = p.get("targets") or []
        if not targets:
            c.problem(where, "has no queries")
        for t in targets:
            n_targets += 1
            if t.get("datasource") != DATASOURCE:
                c.problem(f"{where} {t.get('refId')}", "datasource must be the ${datasource} variable")
            expr = t.get("expr")
            if not expr:
                c.problem(f"{where} {t.get('refId')}", "has no expr")
                continue
            c.expression(f"{where} {t.get('refId')}", expr, need_filters=True)
    return n_targets


def check_rules(c, path):
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    n = 0
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            n += 1
            name = rule.get("alert") or rule.get("record")
            expr = rule.get("expr")
            if not expr:
                c.problem(f"{path}: {name}", "has no expr")
                continue
            c.expression(f"{path}: {name}", str(expr), need_filters=False)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", required=True)
    ap.add_argument("--types", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--rules", required=True)
    args = ap.parse_args()
    names = load_lines(args.names)
    types = dict(line.split(" ", 1) for line in load_lines(args.types))
    if not names:
        print(f"check_promql: {args.names} lists no metric", file=sys.stderr)
        return 1
    c = Checker(names, types)
    n_targets = check_dashboard(c, args.dashboard)
    dash_used = set(c.used)
    n_rules = check_rules(c, args.rules)
    for name in sorted(c.names - dash_used):
        c.problem(args.dashboard, f"exported metric {name} is on no panel")
    if c.problems:
        print(f"check_promql: {len(c.problems)} problem(s):", file=sys.stderr)
        for p in c.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(
        f"check_promql: OK: {c.expressions} expressions ({n_targets} dashboard queries, "
        f"{n_rules} rules), {c.selectors} selectors, all {len(c.names)} exported metrics on the dashboard"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
