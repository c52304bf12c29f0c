#!/usr/bin/python3
"""The collector's status page (services/metrics/status.html) in headless Chromium, served
by the stand-in (summary_standin.py) instead of the collector, checked by
tests/integration/status_page_check.py: live data, no data (every number null, empty
history), the collector going away, and a page that shows the wrong numbers (the check
must fail on it).  Without Chromium the tests that need none still run (the PNG decoder,
the stand-in against API.md) and the test exits 77 (skipped).

Chromium is heavy on a small machine: each test starts it once or twice, never in a loop.
"""
import os
import struct
import subprocess
import sys
import tempfile
import unittest
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)

import procs  # noqa: E402
import status_page_check as check  # noqa: E402

STANDIN = os.path.join(HERE, "summary_standin.py")
CHECKER = os.path.join(ROOT, "tests", "integration", "status_page_check.py")
PAGE = os.path.join(ROOT, "services", "metrics", "status.html")
CHROMIUM = check.find_chromium(os.environ.get("LLMSERVE_CHROMIUM"))
SKIP = 77


class StandIn:
    """The stand-in on a free port for the length of a with block."""

    def __init__(self, *args):
        self.args, self.procs = list(args), []

    def __enter__(self):
        port = procs.start([sys.executable, STANDIN, "--port", "0"] + self.args, self.procs)
        self.url = "http://127.0.0.1:%d" % port
        return self

    def __exit__(self, *exc):
        failures = procs.stop_all(self.procs)
        if failures and exc[0] is None:
            raise AssertionError("; ".join(failures))


def run_checker(*args):
    p = subprocess.run([sys.executable, CHECKER] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=300)
    out = p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")
    sys.stdout.write("".join("    | " + line + "\n" for line in out.splitlines()))
    return p.returncode, out


def encode_png(width, channels, rows, filters):
    """A PNG of rows (bytes, channels per pixel), each row written with the filter
    filters[y % len(filters)]: the decoder's inverse, to test every filter."""
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    prev, raw = bytes(width * channels), b""
    for y, row in enumerate(rows):
        f = filters[y % len(filters)]
        out = bytearray()
        for i, x in enumerate(row):
            a = row[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 0:
                pred = 0
            elif f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) >> 1
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            out.append((x - pred) & 255)
        raw += bytes([f]) + bytes(out)
        prev = row

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, len(rows), 8, ctype, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class WithoutBrowser(unittest.TestCase):
    def test_png_decoder_reads_every_filter(self):
        w, ch = 37, 3
        rows = [bytes((x * 7 + y * 13 + k * 101 + (x * y) % 17) & 255
                      for x in range(w) for k in range(ch)) for y in range(10)]
        data = encode_png(w, ch, rows, [0, 1, 2, 3, 4])
        self.assertEqual(check.decode_png(data), (w, 10, ch, rows))
        rgba = [bytes((x + y * 3 + k) & 255 for x in range(5) for k in range(4)) for y in range(4)]
        self.assertEqual(check.decode_png(encode_png(5, 4, rgba, [4, 3]))[3], rgba)
        with self.assertRaises(ValueError):
            check.decode_png(b"GIF89a" + data[6:])

    def test_one_colour_png_fails_the_screenshot_check(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "flat.png")
            with open(path, "wb") as f:
                f.write(encode_png(64, 3, [bytes(64 * 3)] * 48, [2]))
            fail = check.Failures(quiet=True)
            check.check_screenshot(path, {"#2b7bd6"}, fail, 600)
            text = "\n".join(fail.lines)
            self.assertIn("colours", text)
            self.assertIn("bytes", text)
            self.assertIn("line colours", text)
            self.assertIn("64x48", text)

    def test_standin_follows_api_md(self):
        example = check.contract_example(check.API_MD)
        self.assertIsNotNone(example, "no example summary in API.md")
        keys = check.contract_keys(example)
        for mode in ("live", "empty"):
            with StandIn("--mode", mode) as s:
                a = check.fetch_summary(s.url)
                b = check.fetch_summary(s.url)
                with urllib.request.urlopen(s.url + "/", timeout=5) as r:
                    self.assertIn("text/html", r.headers["Content-Type"])
                    with open(PAGE, "rb") as f:
                        self.assertEqual(r.read(), f.read())
            fail = check.Failures(quiet=True)
            check.check_summary(a, fail, keys)
            self.assertEqual(fail.lines, [], mode)
            self.assertEqual(check.summary_has_data(a), mode == "live")
            if mode == "live":
                self.assertNotEqual(a["overall"], b["overall"], "the numbers must move")
                self.assertEqual(len(a["history"]["t"]), 300)
                self.assertIn(None, a["history"]["ttft_p95"], "a gap in the history")
            else:
                self.assertEqual(a["history"]["t"], [])


@unittest.skipUnless(CHROMIUM, "no Chromium")
class InBrowser(unittest.TestCase):
    def test_live_page_matches_the_summary(self):
        with tempfile.TemporaryDirectory() as d, StandIn() as s:
            shot = os.path.join(d, "status.png")
            rc, out = run_checker("--url", s.url, "--screenshot", shot, "--chromium", CHROMIUM)
            self.assertEqual(rc, 0, out)
            self.assertIn("status page check: ok", out)
            self.assertTrue(os.path.getsize(shot) > 8000)

    def test_no_data_shows_dashes_and_empty_charts(self):
        with StandIn("--mode", "empty") as s:
            rc, out = run_checker("--url", s.url, "--chromium", CHROMIUM)
            self.assertEqual(rc, 1, out)
            self.assertIn("no data", out)
            # The checker then wants "–" for every null and no points on any chart.
            rc, out = run_checker("--url", s.url, "--chromium", CHROMIUM, "--allow-empty")
            self.assertEqual(rc, 0, out)
            for chart in check.CHART_KEYS:
                self.assertIn("chart %s: 0 points" % chart, out)

    def test_collector_down_shows_banner_and_keeps_data(self):
        with StandIn("--down-after", "2") as s:
            html, console = check.dump_dom(CHROMIUM, s.url + "/")
        self.assertEqual(check.script_errors(console), [])
        dom = check.parse_dom(html)
        body = dom.body
        self.assertEqual(body.get("data-state"), "unreachable")
        self.assertGreaterEqual(int(body.get("data-failures")), 1)
        self.assertEqual(body.get("data-drawn"), "2", "two summaries were served")
        self.assertIs(dom.banner_hidden, False, "the banner must show")
        text = "".join(dom.text)
        self.assertIn("Collector unreachable", text)
        for bad in check.BAD_TEXT:
            self.assertNotIn(bad, text)
        for hid in check.HEADLINE_IDS:
            v = dom.ids[hid].get("data-value")
            self.assertTrue(check.is_num(check.parse_value(v)), "%s kept: %r" % (hid, v))
        for c in dom.canvases:
            if c.get("data-chart"):
                self.assertGreater(int(c["data-points"]), 250, c)
        self.assertEqual(len(dom.rows("instance")), 5)

    def test_check_fails_on_a_page_with_wrong_numbers(self):
        """A page that shows each p95 from the p50 field, and throws an error once it has
        drawn, must not pass."""
        with open(PAGE, encoding="utf-8") as f:
            src = f.read()
        edits = {
            "const v = get(s, el.dataset.field);":
                "const v = get(s, el.dataset.field.replace(\"p95\", \"p50\"));",
            "\npoll();\n": "\npoll();\nsetTimeout(() => { throw new Error(\"probe\"); }, 1500);\n",
        }
        bad = src
        for old, new in edits.items():
            self.assertEqual(src.count(old), 1, "the page changed: update this test")
            bad = bad.replace(old, new)
        with tempfile.TemporaryDirectory() as d:
            page = os.path.join(d, "status.html")
            with open(page, "w", encoding="utf-8") as f:
                f.write(bad)
            with StandIn("--page", page) as s:
                first = check.fetch_summary(s.url)
                sampler = check.Sampler(s.url)
                sampler.start()
                try:
                    html, console = check.dump_dom(CHROMIUM, s.url + "/")
                finally:
                    sampler.stop()
        self.assertEqual(len(check.script_errors(console)), 1, console)
        self.assertIn("probe", check.script_errors(console)[0])
        dom = check.parse_dom(html)
        fail = check.Failures(quiet=True)
        check.check_dom(dom, first, [first] + sampler.samples, fail, 3)
        failed = "\n".join(fail.lines)
        for m in ("ttft", "itl", "e2e"):
            self.assertIn("%s-p95 (overall.%s.p95) shows" % (m, m), failed)
        self.assertNotIn("ttft-p99", failed)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    if not result.wasSuccessful():
        sys.exit(1)
    if not CHROMIUM:
        print("SKIP: no Chromium (chromium on PATH or LLMSERVE_CHROMIUM): the page was not "
              "tested in a browser")
        sys.exit(SKIP)
    sys.exit(0)
