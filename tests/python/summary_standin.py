#!/usr/bin/python3
"""A stand-in for the collector's HTTP side, for work on the status page without the
collector: serves services/metrics/status.html at / and an /api/summary that follows
services/metrics/API.md, with numbers that change every second.

    summary_standin.py [--port N] [--mode live|empty] [--down-after N] [--page PATH]

--mode live (default): two pools, five instances (one down, a router and a cache without
pool and model), four alerts (one crossed all the time, one now and then), 300 s of
history with a gap of nulls 100 s to 110 s ago.  Every number is a smooth function of the
time, so two summaries a second apart differ, and a summary fetched at time t can be
compared with a page that shows the one from a moment before.
--mode empty: no traffic: every rate, latency and ratio null, empty history.
--down-after N: after N summaries the stand-in stops listening (the collector went away:
connections are refused) and waits to be killed.

Prints "LISTENING port=N" and then "SERVING" on stdout, as the services do.
"""
import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_PAGE = os.path.join(ROOT, "services", "metrics", "status.html")
HISTORY_S = 300
WINDOW_S = 60
STARTED = time.time()

HISTORY_KEYS = ["ttft_p50", "ttft_p95", "ttft_p99", "itl_p50", "itl_p95", "itl_p99",
                "e2e_p50", "e2e_p95", "e2e_p99", "requests_per_second", "tokens_per_second",
                "cache_hit_rate", "error_rate", "queue_depth", "in_flight"]


def wave(t, period, phase=0.0):
    """0..1, smooth, with the given period in seconds."""
    return 0.5 + 0.5 * math.sin(2 * math.pi * t / period + phase)


def pool_stats(t, share, slow):
    """One pool's numbers at time t: share of the traffic, slow a latency factor."""
    rps = share * (10.0 + 6.0 * wave(t, 37))
    ttft50 = slow * (0.010 + 0.006 * wave(t, 23))
    itl50 = slow * (0.004 + 0.002 * wave(t, 29, 1.0))
    e2e50 = slow * (0.15 + 0.08 * wave(t, 31, 2.0))
    err = 0.004 + 0.03 * wave(t, 47) ** 8  # a spike now and then
    return {
        "requests_per_second": round(rps, 3),
        "tokens_per_second": round(rps * 32.5, 2),
        "error_rate": round(err, 5),
        "cache_hit_rate": round(0.15 + 0.2 * wave(t, 53, 0.5), 4),
        "in_flight": int(round(share * (2 + 4 * wave(t, 17)))),
        "queue_depth": int(round(share * 3 * wave(t, 19, 1.5) ** 2)),
        "ttft": {"p50": round(ttft50, 5), "p95": round(ttft50 * 5.5, 5),
                 "p99": round(ttft50 * 8.0, 5)},
        "itl": {"p50": round(itl50, 5), "p95": round(itl50 * 2.2, 5),
                "p99": round(itl50 * 3.5, 5)},
        "e2e": {"p50": round(e2e50, 4), "p95": round(e2e50 * 2.6, 4),
                "p99": round(e2e50 * 4.0, 4)},
    }


def flat(stats):
    """A pool_stats dict as the history's keys."""
    out = {}
    for m in ("ttft", "itl", "e2e"):
        for q in ("p50", "p95", "p99"):
            out["%s_%s" % (m, q)] = stats[m][q]
    for k in ("requests_per_second", "tokens_per_second", "cache_hit_rate", "error_rate",
              "queue_depth", "in_flight"):
        out[k] = stats[k]
    return out


def live_summary(now):
    overall = pool_stats(now, 1.0, 1.0)
    small = pool_stats(now, 0.8, 0.9)
    large = pool_stats(now, 0.2, 1.6)
    history = {"t": []}
    for k in HISTORY_KEYS:
        history[k] = []
    last = int(now) - 1  # the second now running is not over: the history ends before it
    for t in range(last - HISTORY_S + 1, last + 1):
        history["t"].append(t)
        gap = 100 <= last - t < 110
        point = flat(pool_stats(t, 1.0, 1.0))
        for k in HISTORY_KEYS:
            history[k].append(None if gap else point[k])
    up_for = now - STARTED
    ttft95 = overall["ttft"]["p95"]
    err = overall["error_rate"]
    return {
        "now": round(now, 3),
        "window_seconds": WINDOW_S,
        "overall": overall,
        "pools": [dict(pool="small", **small), dict(pool="large", **large)],
        "instances": [
            {"service": "inference", "instance": "127.0.0.1:7001", "up": True,
             "last_report_seconds_ago": round(now % 1.0, 3), "pool": "small",
             "model": "stories15M-demo", "running": int(round(2 + 2 * wave(now, 13))),
             "waiting": int(round(2 * wave(now, 19, 1.5) ** 2)), "queue_limit": 256,
             "kv_used": int(120 + 200 * wave(now, 41)), "kv_total": 512},
            {"service": "inference", "instance": "127.0.0.1:7002", "up": True,
             "last_report_seconds_ago": round((now + 0.5) % 1.0, 3), "pool": "small",
             "model": "stories15M-demo", "running": int(round(1 + 2 * wave(now, 11))),
             "waiting": 0, "queue_limit": 256, "kv_used": int(60 + 150 * wave(now, 43)),
             "kv_total": 512},
            {"service": "inference", "instance": "127.0.0.1:7003", "up": False,
             "last_report_seconds_ago": round(42.0 + up_for, 1), "pool": "large",
             "model": "stories110M-demo", "running": 0, "waiting": 0, "queue_limit": 64,
             "kv_used": 0, "kv_total": 2048},
            {"service": "router", "instance": "127.0.0.1:7000", "up": True,
             "last_report_seconds_ago": round((now + 0.25) % 1.0, 3), "pool": None,
             "model": None, "in_flight": overall["in_flight"]},
            {"service": "cache", "instance": "127.0.0.1:7100", "up": True,
             "last_report_seconds_ago": round((now + 0.75) % 1.0, 3), "pool": None,
             "model": None},
        ],
        "alerts": [
            {"name": "LlmserveTTFTHigh", "severity": "critical",
             "summary": "TTFT p95 above 500 ms", "value": ttft95, "threshold": 0.5,
             "crossed": ttft95 > 0.5},
            {"name": "LlmserveErrorRateHigh", "severity": "warning",
             "summary": "more than 2% of requests failed", "value": err, "threshold": 0.02,
             "crossed": err > 0.02},
            {"name": "LlmserveInstanceDown", "severity": "critical",
             "summary": "an instance stopped reporting", "value": 1, "threshold": 0,
             "crossed": True},
            {"name": "LlmserveQueueDeep", "severity": "warning",
             "summary": "more than 200 requests waiting", "value": overall["queue_depth"],
             "threshold": 200, "crossed": False},
        ],
        "history": history,
        "collector": {"uptime_seconds": round(up_for, 1),
                      "reports_total": int(up_for * 10), "samples_total": int(up_for * 380),
                      "rejected_total": 0, "series": 80, "series_limit": 10000},
    }


def empty_summary(now):
    """No traffic: instances report, but nothing has a rate, a latency or a ratio."""
    none3 = {"p50": None, "p95": None, "p99": None}
    nothing = {"requests_per_second": None, "tokens_per_second": None, "error_rate": None,
               "cache_hit_rate": None, "in_flight": None, "queue_depth": None,
               "ttft": dict(none3), "itl": dict(none3), "e2e": dict(none3)}
    history = {"t": []}
    for k in HISTORY_KEYS:
        history[k] = []
    up_for = now - STARTED
    return {
        "now": round(now, 3),
        "window_seconds": WINDOW_S,
        "overall": nothing,
        "pools": [dict(pool="small", **nothing)],
        "instances": [
            {"service": "router", "instance": "127.0.0.1:7000", "up": True,
             "last_report_seconds_ago": round(now % 1.0, 3), "pool": None, "model": None,
             "in_flight": None},
            {"service": "inference", "instance": "127.0.0.1:7001", "up": False,
             "last_report_seconds_ago": None, "pool": "small", "model": None,
             "running": None, "waiting": None, "queue_limit": None, "kv_used": None,
             "kv_total": None},
        ],
        "alerts": [
            {"name": "LlmserveTTFTHigh", "severity": "critical",
             "summary": "TTFT p95 above 500 ms", "value": None, "threshold": 0.5,
             "crossed": False},
        ],
        "history": history,
        "collector": {"uptime_seconds": round(up_for, 1), "reports_total": 0,
                      "samples_total": 0, "rejected_total": 0, "series": 0,
                      "series_limit": 10000},
    }


class Handler(BaseHTTPRequestHandler):
    server_version = "summary-standin"

    def log_message(self, fmt, *args):
        pass

    def answer(self, code, ctype, body):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        srv = self.server
        if path in ("/", "/index.html"):
            with open(srv.page, "rb") as f:
                self.answer(200, "text/html; charset=utf-8", f.read())
        elif path == "/api/summary":
            now = time.time()
            s = live_summary(now) if srv.mode == "live" else empty_summary(now)
            self.answer(200, "application/json",
                        json.dumps(s, allow_nan=False).encode("utf-8"))
            with srv.count_lock:
                srv.summaries += 1
                if srv.down_after and srv.summaries >= srv.down_after:
                    # Another thread: shutdown() waits for serve_forever, which runs this.
                    threading.Thread(target=srv.go_down, daemon=True).start()
        elif path == "/healthz":
            self.answer(200, "text/plain", b"ok\n")
        else:
            self.answer(404, "text/plain", b"not found\n")


class StandIn(ThreadingHTTPServer):
    daemon_threads = True

    def go_down(self):
        self.shutdown()
        self.server_close()  # the listening socket goes: new connections are refused


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    ap.add_argument("--mode", choices=["live", "empty"], default="live")
    ap.add_argument("--down-after", type=int, default=0, metavar="N",
                    help="stop listening after N summaries (0: never)")
    ap.add_argument("--page", default=DEFAULT_PAGE)
    a = ap.parse_args()
    srv = StandIn((a.host, a.port), Handler)
    srv.page, srv.mode, srv.down_after = a.page, a.mode, a.down_after
    srv.summaries, srv.count_lock = 0, threading.Lock()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("LISTENING port=%d" % srv.server_address[1], flush=True)
    print("SERVING", flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
        while True:  # down: stay until killed, as a host whose collector died
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
