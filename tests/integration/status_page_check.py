#!/usr/bin/python3
"""Checks the collector's status page in a real browser (headless Chromium) against the
collector's own /api/summary (services/metrics/API.md).

    status_page_check.py --url http://HOST:PORT [--screenshot PATH] [--chromium PATH]
                         [--allow-empty] [--min-refreshes N]

1. GET /api/summary: it must parse and have the fields of API.md.
2. Chromium loads URL/ with 4 s of virtual time and dumps the DOM, while a thread here
   keeps fetching /api/summary (before, every 0.2 s during, and after).  The page names the
   summary it shows (body data-now); each number it shows (data-field, data-value) must
   lie within the values that summaries within NEAR_S of that moment had (plus 2 %), and
   its text must say the same number (data-unit).  Pools, instances and alerts on the page
   are those of such a summary.  The page must have drawn several refreshes, say "live",
   show no NaN/undefined, and every chart (canvas data-points) must have as many points as
   the summary's history has seconds with data (or none, when the summary has none).
3. Chromium takes a screenshot: a PNG (decoded here) of the window's size with many
   colours and, where the charts have points, the charts' line colours.

Exit status 0 when everything holds, 1 otherwise (each failure on its own line), 2 for a
bad command line.  Python 3 standard library only.
"""
import argparse
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from html.parser import HTMLParser

WINDOW = (1280, 900)
VIRTUAL_TIME_MS = 4000
NEAR_S = 1.5          # summaries this close to the page's are what it may show
REL_TOL = 0.02        # a value may differ this much from the range seen around it
SAMPLE_EVERY_S = 0.2
HISTORY_S = 300
CHROMIUM_TIMEOUT_S = 120

HEADLINE_IDS = {
    "ttft-p50": "overall.ttft.p50", "ttft-p95": "overall.ttft.p95",
    "ttft-p99": "overall.ttft.p99", "itl-p50": "overall.itl.p50",
    "itl-p95": "overall.itl.p95", "itl-p99": "overall.itl.p99",
    "e2e-p50": "overall.e2e.p50", "e2e-p95": "overall.e2e.p95",
    "e2e-p99": "overall.e2e.p99",
    "requests-per-second": "overall.requests_per_second",
    "tokens-per-second": "overall.tokens_per_second",
    "cache-hit-rate": "overall.cache_hit_rate", "error-rate": "overall.error_rate",
    "queue-depth": "overall.queue_depth", "in-flight": "overall.in_flight",
}
# The page's charts and the history keys each draws (API.md's history).
CHART_KEYS = {
    "ttft": ["ttft_p50", "ttft_p95", "ttft_p99"],
    "itl": ["itl_p50", "itl_p95", "itl_p99"],
    "e2e": ["e2e_p50", "e2e_p95", "e2e_p99"],
    "requests": ["requests_per_second"],
    "tokens": ["tokens_per_second"],
    "ratios": ["cache_hit_rate", "error_rate"],
    "load": ["queue_depth", "in_flight"],
}
# Each history key and the overall field that is its value now.
OVERALL_OF_KEY = {k: "overall." + k for ks in CHART_KEYS.values() for k in ks}
OVERALL_OF_KEY.update({"%s_%s" % (m, q): "overall.%s.%s" % (m, q)
                       for m in ("ttft", "itl", "e2e") for q in ("p50", "p95", "p99")})
SUMMARY_FIELDS = ["now", "window_seconds", "overall", "pools", "instances", "alerts",
                  "history", "collector"]
BAD_TEXT = ["NaN", "undefined", "Infinity", "[object"]
CHROMIUM_NAMES = ["chromium", "chromium-browser", "google-chrome", "chrome"]
API_MD = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "services", "metrics", "API.md")


class Failures:
    """The failures found; each printed as found unless quiet."""

    def __init__(self, quiet=False):
        self.lines, self.quiet = [], quiet

    def add(self, msg):
        self.lines.append(msg)
        if not self.quiet:
            print("FAIL: " + msg, flush=True)

    def check(self, cond, msg):
        if not cond:
            self.add(msg)
        return cond


def note(msg):
    print("  " + msg, flush=True)


# ---- /api/summary --------------------------------------------------------------------

def fetch_summary(base, timeout=5.0):
    with urllib.request.urlopen(base.rstrip("/") + "/api/summary", timeout=timeout) as r:
        if r.status != 200:
            raise RuntimeError("HTTP %d" % r.status)
        return json.loads(r.read().decode("utf-8"), parse_constant=_no_constant)


def _no_constant(name):
    raise ValueError("the summary has %s (API.md: null, never NaN)" % name)


class Sampler(threading.Thread):
    """Fetches /api/summary every SAMPLE_EVERY_S until stopped; keeps every answer."""

    def __init__(self, base):
        super().__init__(daemon=True)
        self.base, self.samples, self.errors = base, [], []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                self.samples.append(fetch_summary(self.base))
            except Exception as e:  # noqa: BLE001 - a sample lost is reported, not fatal
                self.errors.append(str(e))
            self.halt.wait(SAMPLE_EVERY_S)

    def stop(self):
        self.halt.set()
        self.join(10)


def is_num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def resolve(summary, ctx, field):
    """The value field names in summary, relative to the row ctx; KeyError when the row's
    object is not in this summary."""
    obj = summary
    if ctx is not None:
        kind, key = ctx
        if kind == "pool":
            found = [p for p in summary.get("pools") or [] if p.get("pool") == key]
        elif kind == "instance":
            found = [i for i in summary.get("instances") or []
                     if (i.get("service"), i.get("instance")) == key]
        else:
            found = [a for a in summary.get("alerts") or [] if a.get("name") == key]
        if not found:
            raise KeyError(ctx)
        obj = found[0]
    for part in field.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def summary_has_data(s):
    h = s.get("history") or {}
    for k in OVERALL_OF_KEY:
        if any(is_num(v) for v in h.get(k) or []):
            return True
        if is_num(resolve(s, None, OVERALL_OF_KEY[k])):
            return True
    return False


def contract_example(path):
    """The example summary of API.md (its first json block), or None without the file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"## `/api/summary`.*?```json\n(.*?)```", text, re.S)
    return json.loads(m.group(1)) if m else None


def contract_keys(example):
    """{where: keys every such object has} from API.md's example."""
    inst = [set(i) for i in example["instances"]]
    return {
        "the summary": set(example),
        "overall": set(example["overall"]),
        "pools[]": set(example["pools"][0]),
        "instances[]": set.intersection(*inst),
        "alerts[]": set(example["alerts"][0]),
        "history": set(example["history"]),
        "collector": set(example["collector"]),
    }


def check_summary(s, fail, contract):
    """s against API.md: the keys of its example (where contract has them), equal history
    lengths."""
    if contract:
        objs = {"the summary": [s], "overall": [s.get("overall")], "pools[]": s.get("pools"),
                "instances[]": s.get("instances"), "alerts[]": s.get("alerts"),
                "history": [s.get("history")], "collector": [s.get("collector")]}
        for where, keys in contract.items():
            for o in objs[where] if isinstance(objs[where], list) else [None]:
                missing = sorted(keys - set(o)) if isinstance(o, dict) else ["all of it"]
                fail.check(not missing, "/api/summary: %s lacks %s (API.md)"
                           % (where, ", ".join(missing)))
    else:
        missing = [f for f in SUMMARY_FIELDS if f not in s]
        fail.check(not missing, "/api/summary lacks %s (API.md)" % ", ".join(missing))
    h = s.get("history") if isinstance(s.get("history"), dict) else {}
    lens = {k: len(v) for k, v in h.items() if isinstance(v, list)}
    fail.check(len(set(lens.values())) <= 1,
               "/api/summary history arrays differ in length: %s" % lens)


# ---- the DOM ---------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Dom(HTMLParser):
    """What the checks read from the dumped DOM: body's attributes, elements by id, the
    canvases, every element with data-field (with its row and its text), the banner, and
    the visible text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.body, self.ids, self.canvases, self.fields = {}, {}, [], []
        self.banner_hidden = None
        self.text = []
        self.stack = []   # (tag, row ctx or None, field record or None)
        self.skip = 0     # inside <script>/<style>

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if "id" in a:
            self.ids[a["id"]] = a
        if a.get("id") == "banner":
            self.banner_hidden = "hidden" in a
        if tag == "canvas":
            self.canvases.append(a)
        if tag in VOID:
            return
        ctx = None
        if tag == "tr":
            if "data-pool" in a:
                ctx = ("pool", a["data-pool"])
            elif "data-instance" in a:
                ctx = ("instance", (a.get("data-service"), a["data-instance"]))
            elif "data-alert" in a:
                ctx = ("alert", a["data-alert"])
        elif self.stack:
            ctx = self.stack[-1][1]
        rec = None
        if "data-field" in a:
            rec = {"field": a["data-field"], "value": a.get("data-value"),
                   "unit": a.get("data-unit", ""), "id": a.get("id"), "ctx": ctx, "text": ""}
            self.fields.append(rec)
        self.stack.append((tag, ctx, rec))
        if tag in ("script", "style"):
            self.skip += 1

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break
        if tag in ("script", "style") and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if self.skip:
            return
        self.text.append(data)
        for _, _, rec in self.stack:
            if rec is not None:
                rec["text"] += data

    def rows(self, kind):
        keys = set()
        for rec in self.fields:
            if rec["ctx"] and rec["ctx"][0] == kind:
                keys.add(rec["ctx"][1])
        return keys


def parse_value(s):
    """A numeric data-value: float, None for "null" (or absent), the string otherwise."""
    if s is None or s == "null":
        return None
    try:
        v = float(s)
        return v if math.isfinite(v) else s
    except ValueError:
        return s


def as_attr(v):
    """A summary value as the page writes it in data-value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else json.dumps(v)


SCALE = {"µs": 1e-6, "ms": 1e-3, "s": 1.0, "%": 0.01, "/s": 1.0, "": 1.0}
SUFFIXES = {"s": ("µs", "ms", "s"), "ratio": ("%",), "rate": ("/s",), "count": ("",),
            "num": ("",), "age": ("s",)}


def shown_number(text, unit):
    """(value, tolerance) of a number as the page writes it in unit, or None."""
    m = re.fullmatch(r"\s*(-?\d+(?:\.(\d+))?)\s*([kM]?)\s*(µs|ms|s|%|/s)?\s*", text)
    if not m or (m.group(4) or "") not in SUFFIXES[unit]:
        return None
    mult = {"": 1.0, "k": 1e3, "M": 1e6}[m.group(3)] * SCALE[m.group(4) or ""]
    decimals = len(m.group(2) or "")
    return float(m.group(1)) * mult, 0.5 * 10 ** -decimals * mult


# Ages jump back to 0 at every report (a saw-tooth, faster than a fetch every 0.2 s can
# follow): these compare as the moment they name, now - age, which only moves forward.
AS_MOMENT = {"last_report_seconds_ago", "uptime_seconds"}
MOMENT_TOL_S = 0.25  # a fetch period and a margin: an age in whole seconds also passes


def check_field(rec, near, fail, page_now):
    where = rec["id"] or ("%s %s" % (rec["ctx"][0], rec["ctx"][1]) if rec["ctx"] else "")
    name = "%s (%s)" % (where, rec["field"]) if where else rec["field"]
    raw = rec["value"]
    if not fail.check(raw is not None, "%s has no data-value" % name):
        return
    moment = rec["field"].split(".")[-1] in AS_MOMENT
    expected = []
    for s in near:
        try:
            v = resolve(s, rec["ctx"], rec["field"])
        except KeyError:
            continue
        expected.append(s["now"] - v if moment and is_num(v) else v)
    if not expected:
        return  # the row is reported by the row check
    nums = [e for e in expected if is_num(e)]
    value = shown = parse_value(raw)
    if moment and is_num(shown):
        shown = page_now - shown
    if all(e is None or is_num(e) for e in expected):
        if shown is None:
            fail.check(len(nums) < len(expected), "%s shows no value, but the summary has %s"
                       % (name, nums[0] if nums else None))
        elif not is_num(shown):
            fail.add("%s has data-value %r, not a number" % (name, raw))
        elif fail.check(bool(nums), "%s shows %s, but the summary has null" % (name, raw)):
            lo, hi = min(nums), max(nums)
            tol = MOMENT_TOL_S if moment else REL_TOL * max(abs(lo), abs(hi)) + 1e-9
            fail.check(lo - tol <= shown <= hi + tol,
                       "%s shows %s; the summary had %s..%s around the page's moment%s"
                       % (name, raw, lo, hi, " (as now - age)" if moment else ""))
    else:
        want = sorted({as_attr(e) for e in expected})
        fail.check(raw in want, "%s shows %r; the summary had %s" % (name, raw, want))
    # The text must say the number data-value holds.
    text = rec["text"].strip()
    if rec["unit"] in SUFFIXES:
        if value is None:
            fail.check(text == "–", "%s: no value, but the text is %r (want –)" % (name, text))
        elif is_num(value):
            got = shown_number(text, rec["unit"])
            if fail.check(got is not None, "%s: text %r is not a number in unit %s"
                          % (name, text, rec["unit"])):
                fail.check(abs(got[0] - value) <= got[1] * 1.001 + 1e-12,
                           "%s: text %r does not say data-value %s" % (name, text, raw))


def history_seconds(s, keys):
    """The seconds of s's history that have a value for one of keys."""
    h = s.get("history") or {}
    ts = h.get("t") if isinstance(h.get("t"), list) else []
    cols = [h.get(k) if isinstance(h.get(k), list) else [] for k in keys]
    return {round(t) for i, t in enumerate(ts)
            if is_num(t) and any(i < len(c) and is_num(c[i]) for c in cols)}


def in_window(seconds):
    """Those of seconds the page keeps: within HISTORY_S of the newest."""
    if not seconds:
        return set()
    end = max(seconds)
    return {t for t in seconds if t >= end - HISTORY_S}


def check_dom(dom, first, samples, fail, min_refreshes):
    body = dom.body
    fail.check(body.get("data-state") == "live",
               "the page says %r, not live (body data-state)" % body.get("data-state"))
    fail.check(dom.banner_hidden is not False, "the 'collector unreachable' banner is shown")
    drawn = int(body.get("data-drawn", "0") or 0)
    fail.check(drawn >= min_refreshes,
               "the page drew %d refreshes (body data-drawn), want at least %d"
               % (drawn, min_refreshes))
    text = "".join(dom.text)
    for bad in BAD_TEXT:
        fail.check(bad not in text, "the page shows %r" % bad)

    page_now = parse_value(body.get("data-now"))
    if not fail.check(is_num(page_now), "the page does not say which summary it shows "
                      "(body data-now=%r)" % body.get("data-now")):
        return
    near = [s for s in samples if is_num(s.get("now")) and abs(s["now"] - page_now) <= NEAR_S]
    span = (min(s["now"] for s in samples), max(s["now"] for s in samples))
    if not fail.check(bool(near), "the page shows the summary of %.3f; the summaries fetched "
                      "here span %.3f..%.3f" % (page_now, span[0], span[1])):
        return
    note("page shows the summary of now=%.3f; %d summaries fetched within %.1f s of it"
         % (page_now, len(near), NEAR_S))

    for hid, field in HEADLINE_IDS.items():
        a = dom.ids.get(hid)
        if fail.check(a is not None, "no element #%s" % hid):
            fail.check(a.get("data-field") == field and "data-value" in a,
                       "#%s has data-field=%r data-value=%r, want %s and a value"
                       % (hid, a.get("data-field"), a.get("data-value"), field))
    for rec in dom.fields:
        check_field(rec, near, fail, page_now)

    def keys(s, kind):
        if kind == "pool":
            return {p.get("pool") for p in s.get("pools") or []}
        if kind == "instance":
            return {(i.get("service"), i.get("instance")) for i in s.get("instances") or []}
        return {a.get("name") for a in s.get("alerts") or []}

    for kind in ("pool", "instance", "alert"):
        shown = dom.rows(kind)
        fail.check(any(shown == keys(s, kind) for s in near),
                   "%ss on the page %s; the summary has %s"
                   % (kind, sorted(map(str, shown)), sorted(map(str, keys(near[-1], kind)))))
    crossed = dom.ids.get("alerts-count", {}).get("data-value")
    fail.check(crossed is not None and any(
        int(crossed) == sum(1 for a in s.get("alerts") or [] if a.get("crossed") is True)
        for s in near), "the page counts %s alerts crossed (#alerts-count)" % crossed)

    charts = {c.get("data-chart"): c for c in dom.canvases if c.get("data-chart")}
    fail.check(set(CHART_KEYS) <= set(charts),
               "charts missing: %s" % sorted(set(CHART_KEYS) - set(charts)))
    page_later_s = max(0.0, page_now - first["now"])
    for cid, c in sorted(charts.items()):
        pts = c.get("data-points")
        if not fail.check(pts is not None and pts.isdigit(),
                          "chart %s has data-points=%r" % (cid, pts)):
            continue
        pts = int(pts)
        keys_ = CHART_KEYS.get(cid)
        if keys_ is None:
            continue
        in_hist = len(in_window(history_seconds(first, keys_)))
        union = set()
        for s in samples:
            union |= history_seconds(s, keys_)
        live = any(is_num(resolve(s, None, OVERALL_OF_KEY[k])) for s in samples for k in keys_)
        # The window slides while the page runs: its oldest seconds go.  Where the history
        # lags behind "now", the page adds a point a refresh from the summary's own numbers.
        least = max(in_hist - int(math.ceil(page_later_s)) - 2, 1 if live and not in_hist else 0)
        most = len(in_window(union)) + 1 + (drawn if live else 0)
        note("chart %s: %d points (the first summary's history has %d seconds with data)"
             % (cid, pts, in_hist))
        fail.check(least <= pts <= most,
                   "chart %s has %d points (data-points); the summary's history has %d seconds "
                   "with data (want %d..%d)" % (cid, pts, in_hist, least, most))
    return charts


# ---- Chromium ------------------------------------------------------------------------

def find_chromium(given):
    if given:
        return given if os.access(given, os.X_OK) else shutil.which(given)
    for n in CHROMIUM_NAMES:
        p = shutil.which(n)
        if p:
            return p
    return None


def chromium(binary, url, extra, timeout=CHROMIUM_TIMEOUT_S):
    """Runs headless Chromium on url with extra flags; returns (stdout bytes, the lines of
    the page's console: what it logged and its uncaught errors)."""
    with tempfile.TemporaryDirectory(prefix="status-page-chromium-") as profile:
        argv = [binary, "--headless", "--no-sandbox", "--disable-gpu",
                "--window-size=%d,%d" % WINDOW, "--virtual-time-budget=%d" % VIRTUAL_TIME_MS,
                "--user-data-dir=" + profile, "--no-first-run", "--hide-scrollbars",
                "--disable-extensions", "--disable-background-networking",
                "--enable-logging=stderr", "--v=0"] + extra + [url]
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        err = p.stderr.decode("utf-8", "replace")
        if p.returncode != 0:
            raise RuntimeError("chromium exited %d: %s" % (p.returncode, err[-1500:]))
        return p.stdout, [line for line in err.splitlines() if ":CONSOLE" in line]


def dump_dom(binary, url):
    """(the DOM after VIRTUAL_TIME_MS of virtual time, the console's lines)."""
    out, console = chromium(binary, url, ["--dump-dom"])
    return out.decode("utf-8", "replace"), console


def script_errors(console):
    return [line for line in console if "Uncaught" in line]


def parse_dom(html):
    d = Dom()
    d.feed(html)
    d.close()
    return d


# ---- the screenshot: a PNG decoder (8-bit, not interlaced: what Chromium writes) -------

def decode_png(data):
    """(width, height, channels, rows of bytes) of a PNG; ValueError for what it cannot read."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, ihdr, palette = 8, [], None, None
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if ihdr is None:
        raise ValueError("no IHDR")
    w, h, depth, ctype, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype)
    if depth != 8 or interlace or channels is None:
        raise ValueError("unsupported PNG (depth %d, colour type %d, interlace %d)"
                         % (depth, ctype, interlace))
    raw = zlib.decompress(b"".join(idat))
    stride = w * channels
    if len(raw) < h * (stride + 1):
        raise ValueError("image data too short")
    bpp, prev, rows, p = channels, bytearray(stride), [], 0
    for _ in range(h):
        f, line = raw[p], bytearray(raw[p + 1:p + 1 + stride])
        p += stride + 1
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        elif f != 0:
            raise ValueError("bad filter %d" % f)
        rows.append(bytes(line))
        prev = line
    if ctype == 3:  # palette: expand to RGB
        rows = [b"".join(palette[3 * i:3 * i + 3] for i in r) for r in rows]
        channels = 3
    return w, h, channels, rows


def colour_counts(rows, channels):
    """{rgb bytes: pixels} (grey images: the grey level as one byte)."""
    counts = {}
    take = min(channels, 3)
    for r in rows:
        for x in range(0, len(r), channels):
            c = r[x:x + take]
            counts[c] = counts.get(c, 0) + 1
    return counts


def check_screenshot(path, chart_colours, fail, min_ink):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fail.add("no screenshot at %s: %s" % (path, e))
        return
    fail.check(len(data) > 8000, "the screenshot has %d bytes (want > 8000)" % len(data))
    try:
        w, h, ch, rows = decode_png(data)
    except (ValueError, zlib.error) as e:
        fail.add("the screenshot is not a readable PNG: %s" % e)
        return
    fail.check((w, h) == WINDOW, "the screenshot is %dx%d, want %dx%d" % ((w, h) + WINDOW))
    counts = colour_counts(rows, ch)
    top = max(counts.values()) / float(w * h)
    note("screenshot %s: %dx%d, %d bytes, %d colours, the commonest covers %.0f %%"
         % (path, w, h, len(data), len(counts), top * 100))
    fail.check(len(counts) >= 64, "the screenshot has %d colours (want >= 64)" % len(counts))
    fail.check(top < 0.95, "one colour covers %.0f %% of the screenshot" % (top * 100))
    if chart_colours:
        ink = sum(counts.get(bytes.fromhex(c.lstrip("#")), 0) for c in chart_colours)
        note("pixels in the charts' line colours %s: %d" % (" ".join(sorted(chart_colours)), ink))
        fail.check(ink >= min_ink, "only %d pixels in the charts' line colours (want >= %d): "
                   "the charts did not draw" % (ink, min_ink))


# ---- main --------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="the collector's HTTP base, http://host:port")
    ap.add_argument("--screenshot", metavar="PATH", help="where to keep the screenshot "
                    "(default: a temporary file)")
    ap.add_argument("--chromium", metavar="PATH", help="the browser (default: the first of %s "
                    "on PATH)" % ", ".join(CHROMIUM_NAMES))
    ap.add_argument("--allow-empty", action="store_true",
                    help="accept a summary without data (no traffic): then every number must "
                    "show as – and every chart have no points")
    ap.add_argument("--min-refreshes", type=int, default=3, metavar="N",
                    help="refreshes the page must have drawn in 4 s of virtual time (3)")
    ap.add_argument("--contract", metavar="PATH", default=API_MD,
                    help="API.md, whose example summary names the keys /api/summary must have "
                    "(default: the one of this tree; a missing file: only the top level)")
    ap.add_argument("--min-ink", type=int, default=600, metavar="N",
                    help="pixels of the charts' line colours the screenshot must have (600)")
    a = ap.parse_args(argv)
    base = a.url.rstrip("/")
    fail = Failures()

    binary = find_chromium(a.chromium)
    if not binary:
        print("FAIL: no Chromium (--chromium, or one of %s on PATH)" % ", ".join(CHROMIUM_NAMES))
        return 1
    print("status page check: %s with %s" % (base, binary), flush=True)

    try:
        first = fetch_summary(base)
    except (OSError, ValueError, RuntimeError) as e:
        print("FAIL: cannot read %s/api/summary: %s" % (base, e))
        return 1
    example = contract_example(a.contract)
    if example is None:
        note("no example summary in %s: checking the top-level keys only" % a.contract)
    check_summary(first, fail, contract_keys(example) if example else None)
    has_data = summary_has_data(first)
    note("summary: now=%s, %d pools, %d instances, %d alerts, %d history seconds, data: %s"
         % (first.get("now"), len(first.get("pools") or []), len(first.get("instances") or []),
            len(first.get("alerts") or []), len((first.get("history") or {}).get("t") or []),
            "yes" if has_data else "none"))
    if not has_data and not a.allow_empty:
        fail.add("the summary has no data (no traffic in the window?): put load on the suite, "
                 "or pass --allow-empty")
        return 1

    sampler = Sampler(base)
    sampler.samples.append(first)
    sampler.start()
    try:
        t0 = time.monotonic()
        html, console = dump_dom(binary, base + "/")
        note("DOM dumped in %.1f s (%d bytes)" % (time.monotonic() - t0, len(html)))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        sampler.stop()
        print("FAIL: chromium --dump-dom: %s" % e)
        return 1
    time.sleep(SAMPLE_EVERY_S * 2)
    sampler.stop()
    try:
        sampler.samples.append(fetch_summary(base))
    except (OSError, ValueError, RuntimeError) as e:
        sampler.errors.append(str(e))
    if sampler.errors:
        note("%d summaries could not be fetched during the run (first: %s)"
             % (len(sampler.errors), sampler.errors[0]))
    note("%d summaries fetched around the page" % len(sampler.samples))

    for line in script_errors(console):
        fail.add("the page's script failed: %s" % line.split("] ", 1)[-1])
    dom = parse_dom(html)
    charts = check_dom(dom, first, sampler.samples, fail, a.min_refreshes) or {}

    shot = a.screenshot
    tmp = None
    if not shot:
        tmp = tempfile.TemporaryDirectory(prefix="status-page-shot-")
        shot = os.path.join(tmp.name, "status.png")
    try:
        if os.path.exists(shot):
            os.unlink(shot)
        _, console = chromium(binary, base + "/", ["--screenshot=" + os.path.abspath(shot)])
        for line in script_errors(console):
            fail.add("the page's script failed: %s" % line.split("] ", 1)[-1])
        colours = set()
        for c in charts.values():
            if (c.get("data-points") or "0") != "0":
                colours.update((c.get("data-colors") or "").split())
        check_screenshot(shot, colours, fail, a.min_ink)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        fail.add("chromium --screenshot: %s" % e)
    finally:
        if tmp:
            tmp.cleanup()

    if fail.lines:
        print("status page check: %d failures" % len(fail.lines))
        return 1
    print("status page check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
