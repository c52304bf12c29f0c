#!/usr/bin/python3
"""Tests of the Consul agent stand-in (tests/consul/standin.py) itself, over HTTP against
the running script: registration and the agent endpoints, Consul's error answers, the
passing and tag filters, blocking queries and the index, ACLs, the stand-in's controls,
and health checks that really run: gRPC against a real llmserve-inference instance (and,
with TLS, against llmserve-test-echo), SIGSTOP and SIGKILL making it critical, and the
reaper removing it.

Run through ctest (tests/consul.cmake), which sets the binary paths, the model directory
and the certificate script.
"""
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from concurrent import futures

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import procs  # noqa: E402  (tests/python)
import standin  # noqa: E402  (this directory: parse_duration, format_duration)

STANDIN = os.path.join(HERE, "standin.py")
REAP_INTERVAL_MS = 100
MIN_DEREGISTER_MS = 1000
GRPC_INTERVAL = "200ms"
WAIT_S = 10.0  # the longest any state change may take to show


class Agent:
    """An HTTP client of one stand-in; a new connection per request unless one is given."""

    def __init__(self, port):
        self.port = port

    def call(self, method, path, body=None, token=None, headers=None, timeout=30, conn=None):
        h = dict(headers or {})
        if token is not None:
            h["X-Consul-Token"] = token
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        own = conn is None
        if own:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            raw = resp.read()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            return resp.status, hdrs, raw.decode("utf-8")
        finally:
            if own:
                conn.close()

    def json(self, method, path, body=None, want=200, **kw):
        status, hdrs, text = self.call(method, path, body, **kw)
        if status != want:
            raise AssertionError("%s %s: %d %r, want %d" % (method, path, status, text, want))
        return (json.loads(text) if text else None), hdrs

    def register(self, svc, want=200, query="", **kw):
        status, _, text = self.call("PUT", "/v1/agent/service/register" + query, svc, **kw)
        if status != want:
            raise AssertionError("register %s: %d %r, want %d" % (svc, status, text, want))
        return True

    def health(self, name, query="", **kw):
        entries, hdrs = self.json("GET", "/v1/health/service/%s%s" % (name, query), **kw)
        return entries, int(hdrs["x-consul-index"]), hdrs

    def checks(self, **kw):
        return self.json("GET", "/v1/agent/checks", **kw)[0]

    def services(self, **kw):
        return self.json("GET", "/v1/agent/services", **kw)[0]

    def stats(self):
        return self.json("GET", "/_standin/stats")[0]

    def wait_for(self, name, pred, timeout=WAIT_S):
        """Follows /v1/health/service/name with blocking queries until pred(entries);
        returns (entries, seconds taken)."""
        start = time.monotonic()
        index = 0
        while True:
            left = start + timeout - time.monotonic()
            q = "?index=%d&wait=%dms" % (index, max(50, min(2000, left * 1000))) if index else ""
            entries, index, _ = self.health(name, q)
            if pred(entries):
                return entries, time.monotonic() - start
            if left <= 0:
                raise AssertionError("%s: condition not met within %.1f s; last answer %s"
                                     % (name, timeout, json.dumps(entries)[:2000]))

    def wait_check(self, cid, pred, timeout=WAIT_S):
        """Polls the agent's own view of check cid (/v1/agent/checks) until pred(check)."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.checks().get(cid)
            if c is not None and pred(c):
                return c
            if time.monotonic() > deadline:
                raise AssertionError("check %s: condition not met within %.1f s; last %s"
                                     % (cid, timeout, c))
            time.sleep(0.05)


def check_of(entries, sid, cid=None):
    """The check cid (default service:<sid>) of the entry for service sid, or None."""
    for e in entries:
        if e["Service"]["ID"] == sid:
            for c in e["Checks"]:
                if c["CheckID"] == (cid or "service:" + sid):
                    return c
    return None


def status_is(sid, status):
    return lambda entries: (check_of(entries, sid) or {}).get("Status") == status


class StandinTest(unittest.TestCase):
    processes = []

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="consul-standin-")
        try:
            subprocess.run(["bash", procs.env("LLMSERVE_MAKE_CERTS"), cls.tmp], check=True)
            cert = lambda name: os.path.join(cls.tmp, name)  # noqa: E731
            cls.certs = cert
            cls.standin_procs = []
            cls.a = Agent(cls.start_standin(
                "--reap-interval-ms", str(REAP_INTERVAL_MS),
                "--min-deregister-ms", str(MIN_DEREGISTER_MS),
                "--tls-ca", cert("ca.pem"), "--tls-cert", cert("client.pem"),
                "--tls-key", cert("client.key")))
            cls.b = Agent(cls.start_standin("--acl-token", "secret-one",
                                            "--acl-token", "secret-two"))
            models = procs.env("LLMSERVE_ROUTER_MODELS")
            cls.inference_port = procs.start([
                procs.env("LLMSERVE_INFERENCE_BIN"), "--listen", "127.0.0.1:0",
                "--model", os.path.join(models, "small.bin"),
                "--tokenizer", os.path.join(models, "tok.bin"),
                "--pool", "small", "--model-name", "tiny-small", "--cpu-threads", "1",
                "--grace-ms", "500"], cls.processes)
            cls.inference = cls.processes[-1]
            # Mutual TLS: the stand-in's GRPCUseTLS check must present the client certificate.
            cls.echo_port = procs.start([
                procs.env("LLMSERVE_ECHO_SERVER"), "--listen", "127.0.0.1:0",
                "--tls-cert", cert("server.pem"), "--tls-key", cert("server.key"),
                "--tls-client-ca", cert("ca.pem"), "--grace-ms", "500"], cls.processes)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def start_standin(cls, *args, listen="127.0.0.1:0"):
        port = procs.start([STANDIN, "--listen", listen] + list(args), cls.processes,
                           timeout=20)
        cls.standin_procs.append(cls.processes[-1])
        return port

    @classmethod
    def tearDownClass(cls):
        try:
            # Every stand-in must exit 0 on SIGTERM; the inference instance is killed by a
            # test on purpose.
            procs.stop_suite(cls, lambda p: p in getattr(cls, "standin_procs", []))
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        for p in self.standin_procs:
            self.assertIsNone(p.poll(), "a stand-in exited (status %s)" % p.poll())

    # ---- Go durations ------------------------------------------------------------------

    def test_01_go_durations(self):
        ns = standin.parse_duration
        for text, want in [("10s", 10 * 10**9), ("1m30s", 90 * 10**9), ("500ms", 5 * 10**8),
                           ("1h", 3600 * 10**9), ("1.5h", 5400 * 10**9), ("0", 0),
                           ("-2s", -2 * 10**9), ("+5m", 300 * 10**9), (".5s", 5 * 10**8),
                           ("1h2m3.25s", 3723250 * 10**6), ("3us", 3000), ("3\u00b5s", 3000),
                           ("7ns", 7), ("1.000000001s", 10**9 + 1)]:
            self.assertEqual(ns(text), want, text)
        for text, words in [("", "invalid duration"), ("10", "missing unit"),
                            ("1x", 'unknown unit "x"'), ("s", "invalid duration"),
                            (".s", "invalid duration"), ("-", "invalid duration"),
                            ("1s2", "missing unit")]:
            with self.assertRaises(ValueError, msg=text) as ctx:
                ns(text)
            self.assertIn(words, str(ctx.exception))
            self.assertIn('"%s"' % text, str(ctx.exception))
        fmt = standin.format_duration
        for value, want in [(0, "0s"), (2 * 10**8, "200ms"), (90 * 10**9, "1m30s"),
                            (3600 * 10**9, "1h0m0s"), (15 * 10**8, "1.5s"), (1500, "1.5\u00b5s"),
                            (7, "7ns"), (-10**9, "-1s")]:
            self.assertEqual(fmt(value), want)

        # Over HTTP: the durations come back as Go prints them, bad ones are refused.
        a = self.a
        self.assertTrue(a.register({"Name": "dur", "Check": {
            "GRPC": "127.0.0.1:1", "Interval": "1m30s", "Timeout": "1500ms"}}))
        c = a.checks()["service:dur"]
        self.assertEqual((c["Interval"], c["Timeout"], c["Type"]), ("1m30s", "1.5s", "grpc"))
        status, _, text = a.call("PUT", "/v1/agent/service/register",
                                 {"Name": "dur", "Check": {"TTL": "10"}})
        self.assertEqual(status, 400)
        self.assertIn('time: missing unit in duration "10"', text)
        status, _, text = a.call("GET", "/v1/health/service/dur?index=5&wait=soon")
        self.assertEqual((status, text), (400, "Invalid wait time"))
        a.json("PUT", "/v1/agent/service/deregister/dur")

    # ---- registration and the agent endpoints ------------------------------------------

    def test_02_register_and_agent_endpoints(self):
        a = self.a
        self.assertTrue(a.register({
            "Name": "web", "ID": "web-1", "Tags": ["primary", "v1"], "Address": "127.0.0.2",
            "Port": 8080, "Meta": {"pool": "small", "model_name": "tiny"},
            "Checks": [{"TTL": "30s"}, {"TTL": "30s", "Status": "passing", "Name": "second"}]}))
        self.assertTrue(a.register({"name": "plain", "port": 9}))  # field names fold case
        svcs = a.services()
        self.assertEqual(set(svcs) >= {"web-1", "plain"}, True, svcs)
        w = svcs["web-1"]
        self.assertEqual((w["ID"], w["Service"], w["Tags"], w["Address"], w["Port"], w["Meta"],
                          w["Weights"]),
                         ("web-1", "web", ["primary", "v1"], "127.0.0.2", 8080,
                          {"pool": "small", "model_name": "tiny"},
                          {"Passing": 1, "Warning": 1}))
        self.assertEqual(svcs["plain"]["ID"], "plain")  # ID defaults to Name
        one, hdrs = a.json("GET", "/v1/agent/service/web-1")
        self.assertEqual((one["ID"], one["Port"]), ("web-1", 8080))
        self.assertIn("x-consul-contenthash", hdrs)

        checks = a.checks()
        first, second = checks["service:web-1:1"], checks["service:web-1:2"]
        self.assertEqual((first["Status"], first["Name"], first["ServiceID"],
                          first["ServiceName"], first["Type"]),
                         ("critical", "Service 'web' check", "web-1", "web", "ttl"))
        self.assertEqual((second["Status"], second["Name"]), ("passing", "second"))

        status, _, text = a.call("GET", "/v1/agent/service/nope")
        self.assertEqual((status, text), (404, "unknown service ID: nope"))
        status, _, text = a.call("PUT", "/v1/agent/service/register", {"Port": 1})
        self.assertEqual((status, text), (400, "Missing service name"))
        status, _, text = a.call("PUT", "/v1/agent/service/register", "{not json")
        self.assertEqual(status, 400)
        self.assertTrue(text.startswith("Request decode failed"), text)
        status, _, text = a.call("PUT", "/v1/agent/service/register",
                                 {"Name": "x", "Check": {"GRPC": "127.0.0.1:1"}})
        self.assertEqual(status, 400)
        self.assertIn("Interval must be > 0", text)
        status, _, text = a.call("PUT", "/v1/agent/service/register",
                                 {"Name": "x", "Check": {"HTTP": "http://127.0.0.1/"}})
        self.assertEqual(status, 400)  # a check type the stand-in does not run

        a.json("PUT", "/v1/agent/service/deregister/web-1")
        a.json("PUT", "/v1/agent/service/deregister/plain")
        self.assertNotIn("web-1", a.services())
        self.assertFalse([c for c in a.checks() if c.startswith("service:web-1")])
        # Current Consul answers 404 for a service it does not have.
        status, _, text = a.call("PUT", "/v1/agent/service/deregister/web-1")
        self.assertEqual(status, 404)
        self.assertTrue(text.startswith('Unknown service ID "web-1"'), text)

    def test_03_meta_validated_as_consul_does(self):
        a = self.a
        bad = [({"k%d" % i: "v" for i in range(65)}, "cannot contain more than 64"),
               ({"bad key": "v"}, "Key contains invalid characters"),
               ({"dot.key": "v"}, "Key contains invalid characters"),
               ({"k" * 129: "v"}, "Key is too long (limit: 128 characters)"),
               ({"k": "v" * 513}, "Value is too long (limit: 512 characters)"),
               ({"consul-x": "v"}, "reserved for internal use"),
               ({"": "v"}, "Key cannot be blank")]
        for meta, words in bad:
            status, _, text = a.call("PUT", "/v1/agent/service/register",
                                     {"Name": "meta", "Meta": meta})
            self.assertEqual(status, 400, meta)
            self.assertTrue(text.startswith("Invalid Service Meta: "), text)
            self.assertIn(words, text)
        good = {"k%d" % i: "v" for i in range(63)}
        good.update({"K_-9" + "k" * 124: "v" * 512})
        self.assertTrue(a.register({"Name": "meta", "Meta": good}))
        self.assertEqual(a.services()["meta"]["Meta"], good)
        a.json("PUT", "/v1/agent/service/deregister/meta")

    def test_04_check_updates_and_unknown_checks(self):
        a = self.a
        self.assertTrue(a.register({"Name": "ttl", "Checks": [
            {"TTL": "60s", "CheckID": "ttl-check"},
            {"GRPC": "127.0.0.1:1", "Interval": "60s", "CheckID": "grpc-check"}]}))
        for verb, want in [("pass", "passing"), ("warn", "warning"), ("fail", "critical")]:
            a.json("PUT", "/v1/agent/check/%s/ttl-check?note=%s-note" % (verb, verb))
            c = a.checks()["ttl-check"]
            self.assertEqual((c["Status"], c["Output"]), (want, verb + "-note"))
        a.json("PUT", "/v1/agent/check/update/ttl-check", {"Status": "warning", "Output": "hm"})
        c = a.checks()["ttl-check"]
        self.assertEqual((c["Status"], c["Output"]), ("warning", "hm"))

        status, _, text = a.call("PUT", "/v1/agent/check/update/ttl-check", {"Status": "fine"})
        self.assertEqual((status, text), (400, "Invalid check status: 'fine'"))
        for path in ("/v1/agent/check/pass/nope", "/v1/agent/check/update/nope"):
            status, _, text = a.call("PUT", path, {"Status": "passing"})
            self.assertEqual(status, 404, path)
            self.assertTrue(text.startswith('Unknown check ID "nope"'), text)
        status, _, text = a.call("PUT", "/v1/agent/check/pass/grpc-check")
        self.assertEqual(status, 500)  # not a TTL check
        self.assertIn("does not have associated TTL", text)
        a.json("PUT", "/v1/agent/service/deregister/ttl")
        self.assertEqual(a.call("PUT", "/v1/agent/check/pass/ttl-check")[0], 404)

    def test_05_ttl_expires(self):
        a = self.a
        self.assertTrue(a.register({"Name": "short", "Check": {"TTL": "300ms",
                                                               "Status": "passing"}}))
        a.json("PUT", "/v1/agent/check/pass/service:short?note=alive")
        entries, took = a.wait_for("short", status_is("short", "critical"))
        self.assertGreaterEqual(took, 0.25)
        self.assertEqual(check_of(entries, "short")["Output"],
                         "TTL expired (last output before timeout follows): alive")
        a.json("PUT", "/v1/agent/check/pass/service:short")  # re-arms it
        self.assertEqual(a.checks()["service:short"]["Status"], "passing")
        a.json("PUT", "/v1/agent/service/deregister/short")

    def test_06_reregistration_keeps_check_state(self):
        a = self.a
        svc = {"Name": "rereg", "Checks": [{"TTL": "60s", "CheckID": "keep"},
                                           {"TTL": "60s", "CheckID": "drop"}]}
        self.assertTrue(a.register(svc))
        a.json("PUT", "/v1/agent/check/warn/keep?note=still")
        _, before, _ = a.health("rereg")
        self.assertTrue(a.register(svc))  # identical: nothing changes, no index bump
        _, after, _ = a.health("rereg")
        self.assertEqual(after, before)
        # Consul snapshots check state across a re-registration: a check id registered
        # again keeps its status and output, checks left out stay unless replaced.
        self.assertTrue(a.register({"Name": "rereg", "Port": 1,
                                    "Checks": [{"TTL": "60s", "CheckID": "keep"}]}))
        checks = a.checks()
        self.assertEqual((checks["keep"]["Status"], checks["keep"]["Output"]),
                         ("warning", "still"))
        self.assertIn("drop", checks)
        self.assertTrue(a.register({"Name": "rereg", "Port": 1,
                                    "Checks": [{"TTL": "60s", "CheckID": "keep"}]},
                                   query="?replace-existing-checks=true"))
        self.assertNotIn("drop", a.checks())
        self.assertEqual(a.checks()["keep"]["Status"], "warning")
        a.json("PUT", "/v1/agent/service/deregister/rereg")

    # ---- the health endpoint -----------------------------------------------------------

    def test_07_passing_and_tag_filters(self):
        a = self.a
        for sid, tags, status in [("f-a", ["Primary", "gpu"], "passing"),
                                  ("f-b", ["primary"], "warning"),
                                  ("f-c", [], "critical")]:
            self.assertTrue(a.register({"Name": "filt", "ID": sid, "Tags": tags, "Port": 1,
                                        "Check": {"TTL": "60s", "Status": status}}))
        ids = lambda entries: [e["Service"]["ID"] for e in entries]  # noqa: E731
        entries, _, hdrs = a.health("filt")
        self.assertEqual(ids(entries), ["f-a", "f-b", "f-c"])
        self.assertEqual((hdrs["x-consul-knownleader"], hdrs["x-consul-lastcontact"]),
                         ("true", "0"))
        self.assertEqual(hdrs["content-type"], "application/json")
        e = entries[0]
        self.assertEqual((e["Node"]["Node"], e["Node"]["Address"]), ("standin", "127.0.0.1"))
        self.assertEqual(e["Service"]["Weights"], {"Passing": 1, "Warning": 1})
        self.assertEqual([c["CheckID"] for c in e["Checks"]], ["serfHealth", "service:f-a"])
        self.assertEqual(e["Checks"][0]["Status"], "passing")
        # A warning is not passing, as Consul's filter has it.
        self.assertEqual(ids(a.health("filt", "?passing")[0]), ["f-a"])
        self.assertEqual(ids(a.health("filt", "?passing=true")[0]), ["f-a"])
        self.assertEqual(ids(a.health("filt", "?passing=false")[0]), ["f-a", "f-b", "f-c"])
        self.assertEqual(a.call("GET", "/v1/health/service/filt?passing=maybe")[0], 400)
        self.assertEqual(ids(a.health("filt", "?tag=primary")[0]), ["f-a", "f-b"])
        self.assertEqual(ids(a.health("filt", "?tag=primary&tag=GPU")[0]), ["f-a"])
        self.assertEqual(ids(a.health("filt", "?tag=primary&passing")[0]), ["f-a"])
        self.assertEqual(a.call("GET", "/v1/health/service/filt?filter=x")[0], 400)
        entries, index, _ = a.health("no-such-service")
        self.assertEqual(entries, [])
        self.assertGreaterEqual(index, 1)
        for sid in ("f-a", "f-b", "f-c"):
            a.json("PUT", "/v1/agent/service/deregister/" + sid)

    def test_08_blocking_query_waits_for_wait_plus_jitter(self):
        a = self.a
        self.assertTrue(a.register({"Name": "blk", "Check": {"TTL": "60s"}}))
        _, index, _ = a.health("blk")
        before = a.stats()
        start = time.monotonic()
        _, again, _ = a.health("blk", "?index=%d&wait=1s" % index)
        took = time.monotonic() - start
        # wait plus Consul's jitter of up to wait/16, plus a margin for a loaded machine.
        self.assertGreaterEqual(took, 1.0)
        self.assertLess(took, 1.0 + 1.0 / 16 + 0.3)
        self.assertEqual(again, index)  # it answers even though nothing changed
        after = a.stats()
        self.assertEqual(after["blocking_queries_answered"],
                         before["blocking_queries_answered"] + 1)
        a.json("PUT", "/v1/agent/service/deregister/blk")

    def test_09_blocking_query_returns_on_a_change(self):
        a = self.a
        self.assertTrue(a.register({"Name": "chg", "Check": {"TTL": "60s"}}))
        self.assertTrue(a.register({"Name": "other", "Check": {"TTL": "60s"}}))
        _, index, _ = a.health("chg")
        got = {}

        def block():
            start = time.monotonic()
            got["entries"], got["index"], _ = a.health("chg", "?index=%d&wait=20s" % index)
            got["took"] = time.monotonic() - start

        t = threading.Thread(target=block)
        t.start()
        time.sleep(0.3)
        a.json("PUT", "/v1/agent/check/pass/service:other")  # another service: no wake-up
        time.sleep(0.3)
        a.json("PUT", "/v1/agent/check/pass/service:chg")
        t.join(10)
        self.assertFalse(t.is_alive(), "the blocked query did not return on the change")
        self.assertGreater(got["index"], index)
        self.assertGreaterEqual(got["took"], 0.5)
        self.assertLess(got["took"], 3.0)
        self.assertEqual(check_of(got["entries"], "chg")["Status"], "passing")

        # The index never goes backwards across changes of every kind.
        seen = [got["index"]]
        for step in (lambda: a.json("PUT", "/v1/agent/check/fail/service:chg"),
                     lambda: a.register({"Name": "chg", "Tags": ["t"],
                                         "Check": {"TTL": "60s"}}),
                     lambda: a.json("PUT", "/v1/agent/service/deregister/chg"),
                     lambda: a.register({"Name": "chg", "Check": {"TTL": "60s"}})):
            step()
            seen.append(a.health("chg")[1])
        self.assertEqual(seen, sorted(set(seen)), seen)

        # No change, no bump: the same status and output again.
        a.json("PUT", "/v1/agent/check/fail/service:chg")
        a.json("PUT", "/v1/agent/check/fail/service:chg")
        _, index2, _ = a.health("chg")
        a.json("PUT", "/v1/agent/check/fail/service:chg")
        self.assertEqual(a.health("chg")[1], index2)
        # An output-only change shows on the agent at once and reaches the catalog (the
        # health endpoint and its index) only after check_update_interval (5 min here).
        a.json("PUT", "/v1/agent/check/fail/service:chg?note=new-words")
        self.assertEqual(a.checks()["service:chg"]["Output"], "new-words")
        entries, index3, _ = a.health("chg")
        self.assertEqual(index3, index2)
        self.assertEqual(check_of(entries, "chg")["Output"], "")

        # A query on an absent service follows the last extinction, not every change.
        a.json("PUT", "/v1/agent/service/deregister/other")
        _, ghost, _ = a.health("ghost")
        start = time.monotonic()
        threading.Timer(0.2, lambda: a.register({"Name": "unrelated"})).start()
        _, ghost2, _ = a.health("ghost", "?index=%d&wait=800ms" % ghost)
        self.assertGreaterEqual(time.monotonic() - start, 0.8)
        self.assertEqual(ghost2, ghost)
        for sid in ("chg", "unrelated"):
            a.json("PUT", "/v1/agent/service/deregister/" + sid)

    def test_10_index_reset(self):
        a = self.a
        self.assertTrue(a.register({"Name": "rst", "Check": {"TTL": "60s"}}))
        _, high, _ = a.health("rst")
        self.assertGreater(high, 10)
        a.json("PUT", "/_standin/index?set=3")
        _, low, _ = a.health("rst")
        self.assertEqual(low, 3)
        # A client still holding the old, higher index blocks for the whole wait (as
        # Consul does) and then sees the lower index: it must reset to 0 itself.
        start = time.monotonic()
        _, seen, _ = a.health("rst", "?index=%d&wait=500ms" % high)
        self.assertGreaterEqual(time.monotonic() - start, 0.5)
        self.assertEqual(seen, 3)
        a.json("PUT", "/v1/agent/check/pass/service:rst")
        self.assertEqual(a.health("rst")[1], 4)  # changes bump from the new value on
        a.json("PUT", "/v1/agent/service/deregister/rst")

    # ---- the stand-in's controls ---------------------------------------------------------

    def test_11_fail_and_delay_controls_and_stats(self):
        a = self.a
        before = a.stats()
        a.json("PUT", "/_standin/fail?status=503&count=2")
        for _ in range(2):
            status, _, text = a.call("GET", "/v1/agent/services")
            self.assertEqual((status, text), (503, "stand-in failure"))
        self.assertEqual(a.call("GET", "/v1/agent/services")[0], 200)
        a.json("PUT", "/_standin/delay?ms=300")
        start = time.monotonic()
        self.assertEqual(a.call("GET", "/v1/status/leader")[0], 200)
        self.assertGreaterEqual(time.monotonic() - start, 0.3)
        a.json("PUT", "/_standin/delay?ms=0")
        start = time.monotonic()
        self.assertEqual(a.call("GET", "/v1/status/leader")[2], '"127.0.0.1:8300"')
        self.assertLess(time.monotonic() - start, 0.25)
        self.assertTrue(a.register({"Name": "counted"}))
        a.json("GET", "/v1/agent/service/counted")
        a.health("counted")
        a.json("PUT", "/v1/agent/service/deregister/counted")
        after = a.stats()
        self.assertEqual(after["failures_injected"], before["failures_injected"] + 2)
        self.assertEqual(after["registrations_total"], before["registrations_total"] + 1)
        for kind in ("register", "deregister", "health", "agent_service"):
            self.assertEqual(after["requests"][kind], before["requests"][kind] + 1, kind)
        self.assertEqual(after["requests"]["other"], before["requests"]["other"] + 5)

    def test_12_unknown_paths_and_methods(self):
        a = self.a
        self.assertEqual(a.call("GET", "/v1/kv/x")[0], 404)
        self.assertEqual(a.call("GET", "/elsewhere")[0], 404)
        status, hdrs, text = a.call("POST", "/v1/agent/service/register", {"Name": "x"})
        self.assertEqual((status, text, hdrs.get("allow")), (405, "method POST not allowed",
                                                             "PUT"))
        self.assertEqual(a.call("GET", "/v1/agent/service/register")[0], 405)
        self.assertEqual(a.json("GET", "/v1/agent/self")[0]["Config"]["NodeName"], "standin")

    # ---- ACLs ------------------------------------------------------------------------------

    def test_13_acl(self):
        b = self.b
        svc = {"Name": "acl", "Port": 7, "Check": {"TTL": "60s", "Status": "passing"}}
        status, _, text = b.call("PUT", "/v1/agent/service/register", svc)
        self.assertEqual(status, 403)
        self.assertTrue(text.startswith("Permission denied"), text)
        status, _, text = b.call("PUT", "/v1/agent/service/register", svc, token="wrong")
        self.assertEqual((status, text), (403, "ACL not found"))
        self.assertTrue(b.register(svc, token="secret-one"))
        self.assertTrue(b.register(svc, headers={"Authorization": "Bearer secret-two"}))
        self.assertIn("acl", b.json("GET", "/v1/agent/services?token=secret-one")[0])

        # Lists read without a token come back filtered to nothing, as Consul answers the
        # anonymous token; one named object is refused.
        self.assertEqual(b.services(), {})
        self.assertEqual(b.checks(), {})
        entries, index, _ = b.health("acl")
        self.assertEqual(entries, [])
        self.assertGreater(index, 0)
        self.assertEqual(len(b.health("acl", token="secret-two")[0]), 1)
        self.assertEqual(b.call("GET", "/v1/health/service/acl", token="wrong")[0], 403)
        self.assertEqual(b.call("GET", "/v1/agent/service/acl")[0], 403)
        self.assertEqual(b.call("GET", "/v1/agent/service/acl", token="secret-one")[0], 200)
        self.assertEqual(b.call("GET", "/v1/agent/self")[0], 403)
        self.assertEqual(b.call("PUT", "/v1/agent/check/pass/service:acl")[0], 403)
        self.assertEqual(b.call("GET", "/v1/status/leader")[0], 200)  # needs no token
        self.assertEqual(b.call("GET", "/v1/status/leader", token="wrong")[0], 200)
        self.assertEqual(b.call("PUT", "/v1/agent/service/deregister/nope")[0], 404)
        self.assertEqual(b.call("PUT", "/v1/agent/service/deregister/acl")[0], 403)
        self.assertEqual(b.call("PUT", "/v1/agent/service/deregister/acl",
                                token="secret-one")[0], 200)

    # ---- checks that really run --------------------------------------------------------------

    def test_14_real_grpc_check_sigstop_kill_and_reaper(self):
        a = self.a
        target = "127.0.0.1:%d" % self.inference_port
        self.assertTrue(a.register({
            "Name": "inference", "ID": "inf-1", "Address": "127.0.0.1",
            "Port": self.inference_port, "Meta": {"pool": "small"},
            "Check": {"GRPC": target + "/llmserve.v1.Inference", "Interval": GRPC_INTERVAL,
                      "Timeout": "500ms", "DeregisterCriticalServiceAfter": "100ms"}}))
        self.assertTrue(a.register({
            "Name": "inference-bad", "Check": {"GRPC": target + "/no.such.Service",
                                               "Interval": GRPC_INTERVAL}}))
        entries, _ = a.wait_for("inference", status_is("inf-1", "passing"))
        self.assertEqual(check_of(entries, "inf-1")["Output"],
                         "gRPC check %s/llmserve.v1.Inference: success" % target)
        self.assertEqual([e["Service"]["ID"] for e in a.health("inference", "?passing")[0]],
                         ["inf-1"])
        # Critical from the start, so only its output changes: the agent shows it at once,
        # the catalog only after check_update_interval, as Consul defers output-only changes.
        bad = a.wait_check("service:inference-bad", lambda c: c["Output"])
        self.assertEqual(bad["Status"], "critical")
        self.assertTrue(bad["Output"].startswith("rpc error: code = "), bad["Output"])
        self.assertEqual(check_of(a.health("inference-bad")[0], "inference-bad")["Output"], "")

        # A stopped process accepts connections but never answers: the call times out.
        os.kill(self.inference.pid, signal.SIGSTOP)
        try:
            entries, _ = a.wait_for("inference", status_is("inf-1", "critical"))
            self.assertIn("DeadlineExceeded", check_of(entries, "inf-1")["Output"])
            self.assertEqual(a.health("inference", "?passing")[0], [])
        finally:
            os.kill(self.inference.pid, signal.SIGCONT)
        a.wait_for("inference", status_is("inf-1", "passing"))

        # Killed: refused connections, then the reaper removes the service after the
        # minimum deregistration time (100ms asked, raised to MIN_DEREGISTER_MS).
        self.inference.kill()
        self.inference.wait(10)
        entries, _ = a.wait_for("inference", status_is("inf-1", "critical"))
        critical_at = time.monotonic()
        self.assertIn("Unavailable", check_of(entries, "inf-1")["Output"])
        _, took = a.wait_for("inference", lambda e: e == [], timeout=MIN_DEREGISTER_MS / 1000 + 5)
        gone_after = time.monotonic() - critical_at
        self.assertGreaterEqual(gone_after, MIN_DEREGISTER_MS / 1000 - 0.3)
        self.assertLess(gone_after, MIN_DEREGISTER_MS / 1000 + REAP_INTERVAL_MS / 1000 + 2)
        self.assertNotIn("inf-1", a.services())
        self.assertNotIn("service:inf-1", a.checks())
        stats = a.stats()
        self.assertGreaterEqual(stats["reaped_total"], 1)
        self.assertGreater(stats["checks_run"], 5)
        a.json("PUT", "/v1/agent/service/deregister/inference-bad")

    def test_15_grpc_check_with_tls(self):
        a = self.a
        target = "127.0.0.1:%d" % self.echo_port
        cases = {"tls-ok": {"GRPCUseTLS": True, "TLSServerName": "localhost"},
                 "tls-default-name": {"GRPCUseTLS": True},  # 127.0.0.1 is in the SAN
                 "tls-wrong-name": {"GRPCUseTLS": True, "TLSServerName": "elsewhere.test"},
                 "tls-plaintext": {}}
        for sid, extra in cases.items():
            check = {"GRPC": target, "Interval": GRPC_INTERVAL, "Timeout": "2s"}
            check.update(extra)
            self.assertTrue(a.register({"Name": "echo", "ID": sid, "Check": check}))
        want = {"tls-ok": "passing", "tls-default-name": "passing",
                "tls-wrong-name": "critical", "tls-plaintext": "critical"}
        for sid, status in want.items():
            c = a.wait_check("service:" + sid, lambda c: c["Output"])
            self.assertEqual(c["Status"], status, c)
            if status == "passing":
                self.assertEqual(c["Output"], "gRPC check %s: success" % target)
            else:
                self.assertIn("Unavailable", c["Output"])
        self.assertEqual(len(a.health("echo")[0]), 4)
        self.assertEqual(sorted(e["Service"]["ID"] for e in a.health("echo", "?passing")[0]),
                         ["tls-default-name", "tls-ok"])
        for sid in cases:
            a.json("PUT", "/v1/agent/service/deregister/" + sid)

    def test_16_grpc_answers_from_a_controlled_server(self):
        """A grpc.health.v1 server in this process, answering what the test says: the
        request the stand-in sends, NOT_SERVING, a reply that does not parse, one
        connection kept between calls, and no calls once the check is gone."""
        state = {"reply": b"\x08\x01", "requests": [], "peers": []}
        lock = threading.Lock()

        def check(request, context):
            with lock:
                state["requests"].append(request)
                state["peers"].append(context.peer())
                return state["reply"]

        handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(
                check, request_deserializer=None, response_serializer=None)})
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            a = self.a
            target = "127.0.0.1:%d/some.Service" % port
            self.assertTrue(a.register({"Name": "ctl", "Check": {
                "GRPC": target, "Interval": "100ms", "Timeout": "1s"}}))
            a.wait_for("ctl", status_is("ctl", "passing"))
            with lock:
                self.assertEqual(set(state["requests"]), {b"\x0a\x0csome.Service"})
            _, index, _ = a.health("ctl")

            with lock:
                state["reply"] = b"\x08\x02"  # NOT_SERVING
            start = time.monotonic()
            entries, index2, _ = a.health("ctl", "?index=%d&wait=20s" % index)
            self.assertLess(time.monotonic() - start, 2.0)  # a status change wakes queries
            self.assertGreater(index2, index)
            c = check_of(entries, "ctl")
            self.assertEqual((c["Status"], c["Output"]),
                             ("critical", "gRPC %s serving status: NOT_SERVING" % target))

            with lock:
                state["reply"] = b"\x08"  # truncated
            c = a.wait_check("service:ctl", lambda c: "cannot parse" in c["Output"])
            self.assertEqual(c["Status"], "critical")
            with lock:
                state["reply"] = b"\x08\x01"
            a.wait_for("ctl", status_is("ctl", "passing"))
            with lock:
                n = len(state["peers"])
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                with lock:
                    peers = state["peers"][n:]
                if len(peers) >= 4:
                    break
                time.sleep(0.05)
            self.assertEqual(len(set(peers)), 1, peers)  # one connection while it answers

            a.json("PUT", "/v1/agent/service/deregister/ctl")
            time.sleep(0.15)
            with lock:
                calls = len(state["requests"])
            time.sleep(0.4)
            with lock:
                self.assertEqual(len(state["requests"]), calls, "calls after deregistration")
        finally:
            server.stop(0)

    # ---- an agent restart --------------------------------------------------------------------

    def test_17_restart_on_the_same_port_loses_registrations(self):
        port = self.start_standin()
        first = self.processes[-1]
        c = Agent(port)
        self.assertTrue(c.register({"Name": "lost", "Check": {"TTL": "60s"}}))
        keep = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # a kept-alive client
        self.assertEqual(c.call("GET", "/v1/agent/services", conn=keep)[0], 200)
        first.kill()
        first.wait(10)
        keep.close()
        self.standin_procs.remove(first)  # killed on purpose: no exit status to check
        port2 = self.start_standin(listen="127.0.0.1:%d" % port)
        self.assertEqual(port2, port)
        self.assertEqual(c.services(), {})
        self.assertEqual(c.health("lost")[0], [])
        second = self.processes[-1]
        second.send_signal(signal.SIGTERM)
        start = time.monotonic()
        self.assertEqual(second.wait(10), 0)
        self.assertLess(time.monotonic() - start, 3.0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
