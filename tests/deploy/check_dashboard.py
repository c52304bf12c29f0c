#!/usr/bin/env python3
"""Checks deploy/grafana/llmserve.json without a Grafana:

- valid JSON, unique panel ids (rows' nested panels included), every panel and target on
  the ${DS_PROMETHEUS} data source, the template variables pool and instance;
- every metric name in its PromQL (panel targets and variable queries) is one the
  collector exposes: a name from libs/svc/metric_names.h (histograms only as _bucket,
  _sum or _count; counters and gauges as they are), one of the collector's own
  (services/metrics/expo.c), or Prometheus's `up`;
- every expression parses: with the template variables substituted ($pool, $instance:
  .*; $__rate_interval: 1m) they become the records of a rules file that
  `promtool check rules` must accept.

usage: check_dashboard.py --source DIR --promtool PATH
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def known_metrics(src):
    """{exposed name} from metric_names.h (by kind) and the collector's expo.c."""
    names = set()
    kind = None
    text = open(os.path.join(src, "libs/svc/metric_names.h"), encoding="utf-8").read()
    for m in re.finditer(r'/\*\s*(histogram|counter|gauge)\b|#define\s+M_\w+\s+"([a-z_:][a-z0-9_:]*)"', text):
        if m.group(1):
            kind = m.group(1)
        elif kind == "histogram":
            names |= {m.group(2) + s for s in ("_bucket", "_sum", "_count")}
        elif kind:
            names.add(m.group(2))
        else:
            fail(f"metric_names.h: {m.group(2)} has no kind comment before it")
    expo = open(os.path.join(src, "services/metrics/expo.c"), encoding="utf-8").read()
    names |= set(re.findall(r'"(llmserve_(?:collector_[a-z_]+|instance_up))', expo))
    names.add("up")  # Prometheus's own, for the collector's scrape
    return names


def substitute(expr):
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    expr = expr.replace("$__range", "1h")
    return re.sub(r"\$\{?(pool|instance)(:\w+)?\}?", ".*", expr)


def metric_names_in(expr):
    """Metric names: llmserve_* identifiers, and any identifier before a selector."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values out
    names = set(re.findall(r"\b(llmserve_[a-zA-Z0-9_:]*)", e))
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]", e):
        names.add(m.group(1))
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--promtool", required=True)
    a = ap.parse_args()
    path = os.path.join(a.source, "deploy/grafana/llmserve.json")
    try:
        dash = json.load(open(path, encoding="utf-8"))
    except (OSError, ValueError) as e:
        fail(f"{path}: {e}")
        return 1

    panels = []
    for p in dash.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels", []))
    ids = [p.get("id") for p in panels]
    dup = sorted({i for i in ids if ids.count(i) > 1 or i is None}, key=str)
    if dup:
        fail(f"panel ids not unique or missing: {dup}")

    exprs = []  # (where, expr)
    for p in panels:
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            fail(f"panel {p.get('id')} ({p.get('title')}): data source is not ${{DS_PROMETHEUS}}")
        if not p.get("targets"):
            fail(f"panel {p.get('id')} ({p.get('title')}): no query")
        for t in p.get("targets", []):
            if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
                fail(f"panel {p.get('id')} target {t.get('refId')}: data source is not ${{DS_PROMETHEUS}}")
            exprs.append((f"panel {p['id']} ({p.get('title')}) {t.get('refId')}", t.get("expr", "")))

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    for want in ("DS_PROMETHEUS", "pool", "instance"):
        if want not in variables:
            fail(f"no template variable {want}")
    if variables.get("DS_PROMETHEUS", {}).get("type") != "datasource":
        fail("DS_PROMETHEUS is not a data source variable")
    for name in ("pool", "instance"):
        q = variables.get(name, {}).get("query", {})
        q = q.get("query", "") if isinstance(q, dict) else q
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q or "")
        if not m or m.group(2) != name:
            fail(f"variable {name}: query {q!r} is not label_values(<selector>, {name})")
        else:
            exprs.append((f"variable {name}", m.group(1)))

    known = known_metrics(a.source)
    used = set()
    for where, e in exprs:
        if not e.strip():
            fail(f"{where}: empty expression")
            continue
        for n in metric_names_in(e):
            used.add(n)
            if n not in known:
                fail(f"{where}: metric {n} is not exposed by the collector "
                     "(libs/svc/metric_names.h, services/metrics/expo.c)")

    with tempfile.TemporaryDirectory() as d:
        rules = os.path.join(d, "dashboard_rules.yml")
        with open(rules, "w", encoding="utf-8") as f:
            # One group per expression, so that promtool names every one it refuses.
            f.write("groups:\n")
            for i, (where, e) in enumerate(exprs):
                f.write(f"  - name: dashboard_{i}\n    rules:\n")
                f.write(f"      - record: llmserve_dashboard_expr_{i}\n")
                f.write(f"        expr: {json.dumps(substitute(e))}\n")
        r = subprocess.run([a.promtool, "check", "rules", rules], capture_output=True, text=True)
        if r.returncode != 0:
            out = r.stdout + r.stderr
            fail("promtool check rules refused the dashboard's expressions:\n" + out)
            for i, (where, e) in enumerate(exprs):
                if f'"dashboard_{i}"' in out:
                    print(f"  dashboard_{i}: {where}: {substitute(e)}")

    print(f"check_dashboard: {len(panels)} panels, {len(exprs)} expressions, "
          f"{len(used)} metric names")
    if failures:
        print(f"check_dashboard: {len(failures)} failure(s)")
        return 1
    print("check_dashboard: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
