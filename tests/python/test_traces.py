#!/usr/bin/python3
"""One trace per request across router, cache and inference, as a user reads it in Jaeger.

Starts the real suite on loopback (memcached, llmserve-cache, two llmserve-inference
instances with tiny models, llmserve-router, llmserve-metrics) with the standard OTEL_*
environment pointing at the stand-in OTLP/HTTP receiver (tests/otlp/receiver.py --strict:
Jaeger cannot be installed here; the receiver checks every export against the OTLP JSON
encoding and rebuilds the traces), and checks through the receiver what reached it:

- one request: one trace whose spans from the three services link parent to child, with
  the attributes README.md's "Traces" lists; a cache hit: the lookup's tier, no inference;
- the client's traceparent honoured, from the metadata and from the submit's field (the
  field first); malformed values start a new trace and are never an error; an unsampled
  parent gives no spans anywhere;
- Router.Complete traced as well; llmctl's --traceparent and the trace id it prints;
- a router with OTEL_TRACES_SAMPLER=traceidratio samples exactly the trace ids the
  specification's rule picks, and the hops after it follow its decision;
- a receiver answering 503, slow, or down: every request still served, the spans dropped
  counted in llmserve_trace_spans_dropped_total on the metrics collector, export resumed
  once the receiver is back;
- SIGTERM sends what is queued before the process exits.

Run through ctest (tests/otlp.cmake), which sets the binary paths, models and PYTHONPATH.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

import grpc

import procs
from procs import env as _env

from llmserve.v1 import common_pb2, router_pb2

CALL_TIMEOUT_S = 60.0
WATCHDOG_S = 420.0
RECEIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "otlp", "receiver.py")
SERVER, CLIENT, INTERNAL = 2, 3, 1  # OTLP span kinds
ERROR = 2  # OTLP status code


def tp(trace_id, span_id, flags="01"):
    return "00-%s-%s-%s" % (trace_id, span_id, flags)


def rand_hex(nbytes):
    return "%0*x" % (nbytes * 2, random.getrandbits(nbytes * 8) or 1)


def http(method, url, timeout=10):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode("utf-8")


class Traces(unittest.TestCase):
    processes = []
    memcached = None
    receiver = None

    # ---- the suite ------------------------------------------------------------------

    @classmethod
    def otel_env(cls, **extra):
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("OTEL_"):
                del e[k]
        e.update({
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:%d" % cls.rx_port,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_BSP_EXPORT_TIMEOUT": "1000",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
        })
        e.update(extra)
        return e

    @classmethod
    def start_receiver(cls):
        cls.receiver = subprocess.Popen(
            [sys.executable, RECEIVER, "--listen", "127.0.0.1:%d" % cls.rx_port, "--strict"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0)
        procs.read_serving(cls.receiver, 30)
        threading.Thread(target=procs.drain, args=(cls.receiver.stdout,), daemon=True).start()

    @classmethod
    def stop_receiver(cls):
        cls.receiver.send_signal(signal.SIGTERM)
        cls.receiver.wait(10)
        cls.receiver.stdout.close()

    @classmethod
    def setUpClass(cls):
        cls.rx_port = procs.free_port()
        cls.start_receiver()
        cls.rx = "http://127.0.0.1:%d" % cls.rx_port
        try:
            cls.start_suite()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start_suite(cls):
        models = _env("LLMSERVE_ROUTER_MODELS")
        ports = {}
        cls.metrics_port = procs.start(
            [_env("LLMSERVE_METRICS_BIN"), "--listen", "127.0.0.1:0",
             "--http-listen", "127.0.0.1:0"], cls.processes, ports=ports)
        cls.metrics_http = "http://127.0.0.1:%d" % ports["HTTP"]
        report = ["--metrics", "127.0.0.1:%d" % cls.metrics_port, "--metrics-interval-ms", "200"]
        e = cls.otel_env()
        cls.memcached, mc_port = procs.start_memcached()
        cls.cache_port = procs.start(
            [_env("LLMSERVE_CACHE_BIN"), "--listen", "127.0.0.1:0",
             "--memcached", "--SERVER=127.0.0.1:%d" % mc_port] + report, cls.processes, env=e)
        cls.pool_ports = {}
        for pool in ("small", "large"):
            cls.pool_ports[pool] = procs.start(
                [_env("LLMSERVE_INFERENCE_BIN"), "--listen", "127.0.0.1:0",
                 "--model", os.path.join(models, pool + ".bin"),
                 "--tokenizer", os.path.join(models, "tok.bin"), "--pool", pool,
                 "--model-name", "tiny-" + pool, "--cpu-threads", "1", "--grace-ms", "500"]
                + report, cls.processes, env=e)
        cls.router_port = cls.start_router(e, report)
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % cls.router_port)
        cls.generate, cls.complete = procs.router_calls(cls.channel)

    @classmethod
    def start_router(cls, env, extra=()):
        return procs.start(
            [_env("LLMSERVE_ROUTER_BIN"), "--listen", "127.0.0.1:0",
             "--pool", "small=127.0.0.1:%d" % cls.pool_ports["small"],
             "--pool", "large=127.0.0.1:%d" % cls.pool_ports["large"],
             "--cache", "127.0.0.1:%d" % cls.cache_port, "--grace-ms", "2000"] + list(extra),
            cls.processes, env=env)

    @classmethod
    def tearDownClass(cls):
        procs.stop_suite(cls, lambda p: os.path.basename(p.args[0]).startswith("llmserve-"))
        if cls.receiver and cls.receiver.poll() is None:
            cls.stop_receiver()

    def setUp(self):
        if self.receiver.poll() is not None:  # a test stopped it and failed
            self.start_receiver()
        http("DELETE", self.rx + "/_receiver/traces")

    # ---- calls ----------------------------------------------------------------------

    def submit(self, prompt, rid, max_tokens=4, traceparent="", **kw):
        return router_pb2.GenerateRequest(submit=router_pb2.GenerateSubmit(
            request_id=rid, prompt=prompt, traceparent=traceparent,
            sampling=common_pb2.SamplingParams(max_tokens=max_tokens), **kw))

    def ask(self, prompt, metadata_tp=None, field_tp="", generate=None, **kw):
        """One request on its own stream; returns (started, done) after checking that it
        ended with exactly one Done."""
        md = [("traceparent", metadata_tp)] if metadata_tp is not None else None
        rid = "tr-%x" % random.getrandbits(48)
        evs = list((generate or self.generate)(iter([self.submit(prompt, rid, traceparent=field_tp,
                                                                   **kw)]),
                                               timeout=CALL_TIMEOUT_S, metadata=md))
        kinds = [e.WhichOneof("kind") for e in evs]
        self.assertEqual(kinds[-1], "done", (kinds, evs[-1]))
        self.assertEqual(sum(k in ("done", "error") for k in kinds), 1, kinds)
        started = [e.started for e in evs if e.WhichOneof("kind") == "started"][-1]
        return started, evs[-1].done

    # ---- the receiver ---------------------------------------------------------------

    def trace(self, trace_id):
        try:
            return json.loads(http("GET", self.rx + "/_receiver/trace/" + trace_id))
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def spans(self, trace_id):
        return json.loads(http("GET", self.rx + "/_receiver/traces")).get(trace_id, [])

    def wait_spans(self, trace_id, want, timeout=10.0):
        """Waits until trace_id has spans matching each (service, name, kind) in want, as
        many as listed; returns the trace's spans."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(trace_id)
            have = [(s["service"], s["name"], s["kind"]) for s in spans]
            if all(have.count(w) >= want.count(w) for w in want):
                return spans
            if time.monotonic() > deadline:
                self.fail("trace %s: want %s, have %s" % (trace_id, want, have))
            time.sleep(0.05)

    def stats(self):
        return json.loads(http("GET", self.rx + "/_receiver/stats"))

    def one(self, spans, service, name, kind=None, **attrs):
        found = [s for s in spans if s["service"] == service and s["name"] == name
                 and (kind is None or s["kind"] == kind)
                 and all(s["attributes"].get(k) == v for k, v in attrs.items())]
        self.assertEqual(len(found), 1, "%s %s %s in %s" % (
            service, name, attrs, [(s["service"], s["name"], s["attributes"]) for s in spans]))
        return found[0]

    def assert_child(self, child, parent):
        self.assertEqual(child["traceId"], parent["traceId"])
        self.assertEqual(child["parentSpanId"], parent["spanId"],
                         "%s is not a child of %s" % (child["name"], parent["name"]))
        self.assertGreaterEqual(child["start"], parent["start"] - 2_000_000)  # 2 ms of clocks

    def assert_rpc(self, span, service, method):
        a = span["attributes"]
        self.assertEqual(a.get("rpc.system"), "grpc", span["name"])
        self.assertEqual(a.get("rpc.service"), service)
        self.assertEqual(a.get("rpc.method"), method)
        self.assertIn("rpc.grpc.status_code", a)

    def metric_sum(self, name, **labels):
        text = http("GET", self.metrics_http + "/metrics")
        total = 0.0
        for line in text.splitlines():
            m = re.match(r'^%s\{([^}]*)\} (\S+)$' % re.escape(name), line)
            if not m:
                continue
            got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(2))
        return total

    # ---- tests ----------------------------------------------------------------------

    def test_01_one_trace_across_router_cache_and_inference(self):
        trace_id, parent = rand_hex(16), rand_hex(8)
        prompt = "Once upon a time %s" % rand_hex(4)
        started, done = self.ask(prompt, metadata_tp=tp(trace_id, parent))
        self.assertFalse(started.cache_hit)
        self.assertEqual(started.traceparent.split("-")[1], trace_id)
        self.assertEqual(started.traceparent.split("-")[3], "01")
        R, C, I = "llmserve-router", "llmserve-cache", "llmserve-inference"
        spans = self.wait_spans(trace_id, [
            (R, "llmserve.v1.Router/Generate", SERVER), (R, "route", INTERNAL),
            (R, "llmserve.v1.Cache/Session", CLIENT), (R, "llmserve.v1.Cache/Session", CLIENT),
            (R, "llmserve.v1.Inference/Generate", CLIENT),
            (C, "llmserve.v1.Cache/Session", SERVER), (C, "llmserve.v1.Cache/Session", SERVER),
            (I, "llmserve.v1.Inference/Generate", SERVER),
            (I, "queue", INTERNAL), (I, "prefill", INTERNAL), (I, "decode", INTERNAL)])
        tree = self.trace(trace_id)
        self.assertEqual(tree["services"], [C, I, R])
        self.assertEqual(tree["roots"], [])
        self.assertEqual(len(tree["orphans"]), 1, "only the client's span is missing")
        self.assertEqual(tree["cycles"], [])

        root = self.one(spans, R, "llmserve.v1.Router/Generate")
        self.assertEqual(root["parentSpanId"], parent)
        self.assert_rpc(root, "llmserve.v1.Router", "Generate")
        a = root["attributes"]
        self.assertEqual(a["gen_ai.operation.name"], "text_completion")
        self.assertEqual(a["gen_ai.request.max_tokens"], 4)
        self.assertEqual(a["gen_ai.request.temperature"], 0.0)
        self.assertEqual(a["gen_ai.request.model"], started.pool)
        self.assertEqual(a["gen_ai.response.model"], started.model)
        self.assertEqual(a["gen_ai.usage.input_tokens"], done.usage.prompt_tokens)
        self.assertEqual(a["gen_ai.usage.output_tokens"], done.usage.completion_tokens)
        self.assertEqual(a["gen_ai.response.finish_reasons"], ["length"])
        self.assertEqual(a["llmserve.pool"], started.pool)
        self.assertEqual(a["llmserve.cache.hit_kind"], "miss")
        self.assertAlmostEqual(a["llmserve.complexity"], started.complexity, places=4)
        self.assertEqual(a["llmserve.instance"], started.instance)
        self.assertEqual(a["rpc.grpc.status_code"], 0)
        self.assertEqual([e["name"] for e in root["events"]], ["first_token"])
        for s in spans:
            res = s["resource"]
            self.assertEqual(res["service.name"], s["service"])
            self.assertTrue(res.get("service.instance.id"), s["name"])
            self.assertTrue(res.get("service.version"), s["name"])
            self.assertGreaterEqual(s["end"], s["start"])

        route = self.one(spans, R, "route")
        self.assert_child(route, root)
        self.assertEqual(route["attributes"]["llmserve.pool"], started.pool)
        self.assertIn("complexity", route["attributes"]["llmserve.route_reason"])

        lookup = self.one(spans, R, "llmserve.v1.Cache/Session", CLIENT,
                          **{"llmserve.cache.operation": "lookup"})
        self.assert_child(lookup, root)
        self.assert_rpc(lookup, "llmserve.v1.Cache", "Session")
        self.assertEqual(lookup["attributes"]["llmserve.cache.result"], "miss")
        self.assertEqual(lookup["attributes"]["server.port"], self.cache_port)
        c_lookup = self.one(spans, C, "llmserve.v1.Cache/Session", SERVER,
                            **{"llmserve.cache.operation": "lookup"})
        self.assert_child(c_lookup, lookup)
        self.assert_rpc(c_lookup, "llmserve.v1.Cache", "Session")
        self.assertEqual(c_lookup["attributes"]["llmserve.cache.result"], "miss")

        call = self.one(spans, R, "llmserve.v1.Inference/Generate", CLIENT)
        self.assert_child(call, root)
        self.assert_rpc(call, "llmserve.v1.Inference", "Generate")
        self.assertEqual(call["attributes"]["server.port"], self.pool_ports[started.pool])
        self.assertEqual(call["attributes"]["llmserve.attempt"], 1)
        self.assertGreaterEqual(call["start"], lookup["end"] - 2_000_000, "after the lookup")
        inf = self.one(spans, I, "llmserve.v1.Inference/Generate", SERVER)
        self.assert_child(inf, call)
        self.assert_rpc(inf, "llmserve.v1.Inference", "Generate")
        ia = inf["attributes"]
        self.assertEqual(ia["gen_ai.usage.output_tokens"], done.usage.completion_tokens)
        self.assertEqual(ia["gen_ai.usage.input_tokens"], done.usage.prompt_tokens)
        self.assertEqual(ia["gen_ai.response.finish_reasons"], ["length"])
        self.assertEqual(ia["gen_ai.request.model"], started.model)
        self.assertEqual(ia["rpc.grpc.status_code"], 0)
        self.assertIn("first_token", [e["name"] for e in inf["events"]])
        phases = [self.one(spans, I, n) for n in ("queue", "prefill", "decode")]
        for p in phases:
            self.assert_child(p, inf)
            self.assertLessEqual(p["end"], inf["end"] + 1000)
        for a_, b_ in zip(phases, phases[1:]):
            self.assertLessEqual(a_["end"], b_["start"] + 1000, (a_["name"], b_["name"]))

        store = self.one(spans, R, "llmserve.v1.Cache/Session", CLIENT,
                         **{"llmserve.cache.operation": "store"})
        self.assert_child(store, root)
        c_store = self.one(spans, C, "llmserve.v1.Cache/Session", SERVER,
                           **{"llmserve.cache.operation": "store"})
        self.assert_child(c_store, store)

        # The same prompt again, in a trace of its own: a hit, answered by the cache (the
        # store is sent without waiting for its answer: it may take a moment).
        for _ in range(40):
            trace2 = rand_hex(16)
            started2, done2 = self.ask(prompt, metadata_tp=tp(trace2, rand_hex(8)))
            if started2.cache_hit:
                break
            time.sleep(0.05)
        self.assertTrue(started2.cache_hit)
        spans2 = self.wait_spans(trace2, [(R, "llmserve.v1.Router/Generate", SERVER),
                                          (C, "llmserve.v1.Cache/Session", SERVER)])
        time.sleep(0.3)  # anything late would be an inference span: there must be none
        spans2 = self.spans(trace2)
        self.assertEqual(sorted({s["service"] for s in spans2}), [C, R])
        root2 = self.one(spans2, R, "llmserve.v1.Router/Generate")
        self.assertEqual(root2["attributes"]["llmserve.cache.hit_kind"], "exact")
        self.assertNotIn("llmserve.instance", root2["attributes"])
        self.assertEqual(root2["attributes"]["gen_ai.usage.output_tokens"],
                         done2.usage.completion_tokens)
        hit = self.one(spans2, C, "llmserve.v1.Cache/Session", SERVER)
        self.assertEqual(hit["attributes"]["llmserve.cache.result"], "hit")
        self.assertIn(hit["attributes"]["llmserve.cache.tier"], ("l1", "memcached"))
        self.assertEqual(hit["attributes"]["llmserve.cache.hit_kind"], "exact")
        self.assertEqual(self.stats()["spans_rejected"], 0)

    def test_02_field_first_then_metadata(self):
        t_field, t_md = rand_hex(16), rand_hex(16)
        s_field = rand_hex(8)
        started, _ = self.ask("field %s" % rand_hex(4), metadata_tp=tp(t_md, rand_hex(8)),
                              field_tp=tp(t_field, s_field))
        self.assertEqual(started.traceparent.split("-")[1], t_field)
        root = self.one(self.wait_spans(t_field, [("llmserve-router",
                                                   "llmserve.v1.Router/Generate", SERVER)]),
                        "llmserve-router", "llmserve.v1.Router/Generate")
        self.assertEqual(root["parentSpanId"], s_field)
        # A malformed field counts as empty: the metadata's context is used.
        s_md = rand_hex(8)
        started, _ = self.ask("field %s" % rand_hex(4), metadata_tp=tp(t_md, s_md),
                              field_tp=tp(t_field.upper(), s_field))
        self.assertEqual(started.traceparent.split("-")[1], t_md)
        root = self.one(self.wait_spans(t_md, [("llmserve-router",
                                                "llmserve.v1.Router/Generate", SERVER)]),
                        "llmserve-router", "llmserve.v1.Router/Generate")
        self.assertEqual(root["parentSpanId"], s_md)

    def test_03_malformed_traceparent_starts_a_new_trace(self):
        tid, sid = rand_hex(16), rand_hex(8)
        bad = [tp(tid.upper(), sid), tp("0" * 32, sid), tp(tid, "0" * 16),
               "ff-%s-%s-01" % (tid, sid), tp(tid, sid)[:-1], tp(tid, sid) + "-",
               "00_%s_%s_01" % (tid, sid), "", "x" * 200]
        seen = set()
        for value in bad:
            started, done = self.ask("bad tp %s" % rand_hex(4), metadata_tp=value)
            self.assertEqual(done.finish_reason, common_pb2.FINISH_REASON_LENGTH, value)
            new = started.traceparent.split("-")[1]
            self.assertNotEqual(new, tid, value)
            self.assertNotIn(new, seen)
            seen.add(new)
            spans = self.wait_spans(new, [("llmserve-router", "llmserve.v1.Router/Generate",
                                           SERVER),
                                          ("llmserve-inference",
                                           "llmserve.v1.Inference/Generate", SERVER)])
            root = self.one(spans, "llmserve-router", "llmserve.v1.Router/Generate")
            self.assertEqual(root["parentSpanId"], "", value)
        self.assertIsNone(self.trace(tid))

    def test_04_unsampled_parent_no_spans_anywhere(self):
        tid = rand_hex(16)
        started, _ = self.ask("unsampled %s" % rand_hex(4), metadata_tp=tp(tid, rand_hex(8), "00"))
        self.assertEqual(started.traceparent.split("-")[1], tid)
        self.assertEqual(started.traceparent.split("-")[3], "00")
        # A sampled request after it: once its spans are in, the unsampled one's would be.
        t2 = rand_hex(16)
        self.ask("sampled %s" % rand_hex(4), metadata_tp=tp(t2, rand_hex(8)))
        self.wait_spans(t2, [("llmserve-inference", "llmserve.v1.Inference/Generate", SERVER),
                             ("llmserve-cache", "llmserve.v1.Cache/Session", SERVER)])
        time.sleep(0.3)
        self.assertIsNone(self.trace(tid))

    def test_05_complete_and_llmctl(self):
        tid, sid = rand_hex(16), rand_hex(8)
        resp = self.complete(router_pb2.CompleteRequest(request=router_pb2.GenerateSubmit(
            prompt="complete %s" % rand_hex(4), sampling=common_pb2.SamplingParams(max_tokens=3))),
            timeout=CALL_TIMEOUT_S, metadata=[("traceparent", tp(tid, sid))])
        self.assertEqual(resp.route.traceparent.split("-")[1], tid)
        spans = self.wait_spans(tid, [("llmserve-router", "llmserve.v1.Router/Complete", SERVER),
                                      ("llmserve-inference", "llmserve.v1.Inference/Generate",
                                       SERVER)])
        root = self.one(spans, "llmserve-router", "llmserve.v1.Router/Complete")
        self.assertEqual(root["parentSpanId"], sid)
        self.assert_rpc(root, "llmserve.v1.Router", "Complete")

        llmctl = _env("LLMSERVE_LLMCTL_BIN")
        router = "127.0.0.1:%d" % self.router_port
        tid = rand_hex(16)
        out = subprocess.run([llmctl, "--router", router, "--max-tokens", "3",
                              "--traceparent", tp(tid, rand_hex(8)), "hello", rand_hex(4)],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("trace     %s\n" % tid, out.stderr)
        self.wait_spans(tid, [("llmserve-router", "llmserve.v1.Router/Generate", SERVER)])
        # Without --traceparent the router starts the trace, and llmctl says which.
        out = subprocess.run([llmctl, "--router", router, "--max-tokens", "3", "--json",
                              "hello", rand_hex(4)], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        doc = json.loads(out.stdout)
        self.assertTrue(doc["trace_sampled"])
        spans = self.wait_spans(doc["trace_id"], [("llmserve-router",
                                                   "llmserve.v1.Router/Generate", SERVER)])
        self.assertEqual(self.one(spans, "llmserve-router",
                                  "llmserve.v1.Router/Generate")["parentSpanId"], "")
        out = subprocess.run([llmctl, "--router", router, "--traceparent", tp(tid.upper(), "1" * 16),
                              "hello"], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 2)
        self.assertIn("--traceparent", out.stderr)

    def test_06_sampler_ratio_decides_on_the_trace_id(self):
        ratio = 0.25
        e = self.otel_env(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG=str(ratio))
        before = len(self.processes)
        port = self.start_router(e)
        ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        try:
            generate, _ = procs.router_calls(ch)
            ids = [rand_hex(16) for _ in range(160)]
            reqs = [self.submit("ratio %d %s" % (i, rand_hex(4)), "r%d" % i, max_tokens=1,
                                traceparent=tp(t, rand_hex(8)), cache_policy=common_pb2.CACHE_POLICY_BYPASS)
                    for i, t in enumerate(ids)]
            evs = list(generate(iter(reqs), timeout=CALL_TIMEOUT_S))
            self.assertEqual(sum(e.WhichOneof("kind") == "done" for e in evs), len(ids))
            bound = int(ratio * 2 ** 63)
            want = {t for t in ids if (int(t[16:], 16) >> 1) < bound}
            self.assertTrue(10 < len(want) < 80, len(want))  # the ids are random
            # The last sampled request's spans in: every earlier export has been made.
            deadline = time.monotonic() + 10
            while True:
                got = {t for t in ids if self.spans(t)}
                if got >= want or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            time.sleep(0.3)
            got = {}
            for t in ids:
                s = self.spans(t)
                if s:
                    got[t] = {x["service"] for x in s}
            self.assertEqual(set(got), want, "sampled exactly where the rule says")
            for t, services in got.items():
                self.assertIn("llmserve-router", services, "no hop sampled alone")
                self.assertIn("llmserve-inference", services)
        finally:
            ch.close()
            stopped = self.processes[before:]
            del self.processes[before:]
            self.assertEqual(procs.stop_all(stopped), [])

    def test_07_receiver_failing_or_slow_never_touches_serving(self):
        dropped0 = self.metric_sum("llmserve_trace_spans_dropped_total", service="router",
                                   reason="export_failed")
        http("PUT", self.rx + "/_receiver/fail?status=503&count=100000")
        for i in range(20):
            self.ask("refused %d %s" % (i, rand_hex(4)), metadata_tp=tp(rand_hex(16), rand_hex(8)))
        deadline = time.monotonic() + 15
        while self.metric_sum("llmserve_trace_spans_dropped_total", service="router",
                              reason="export_failed") <= dropped0:
            self.assertLess(time.monotonic(), deadline, "503s counted as dropped spans")
            time.sleep(0.2)
        st = self.stats()
        self.assertGreater(st["responses"].get("503", 0), 1, "retried")
        self.assertEqual(st["spans_accepted"], 0)
        # Slow: each export answered after 3 s; requests go on at their own pace.
        http("DELETE", self.rx + "/_receiver/traces")
        http("PUT", self.rx + "/_receiver/delay?ms=3000")
        # An exporter that made requests wait would cost each at least the HTTP timeout
        # (1 s): ten of them well over the bound.
        t0 = time.monotonic()
        for i in range(10):
            self.ask("slow %d %s" % (i, rand_hex(4)), metadata_tp=tp(rand_hex(16), rand_hex(8)))
        self.assertLess(time.monotonic() - t0, 5.0, "requests waited for the exporter")
        # Back to normal: a new trace arrives whole.
        http("DELETE", self.rx + "/_receiver/traces")
        tid = rand_hex(16)
        self.ask("recovered %s" % rand_hex(4), metadata_tp=tp(tid, rand_hex(8)))
        self.wait_spans(tid, [("llmserve-router", "llmserve.v1.Router/Generate", SERVER),
                              ("llmserve-inference", "llmserve.v1.Inference/Generate", SERVER)])

    def test_08_receiver_down_then_back(self):
        dropped0 = self.metric_sum("llmserve_trace_spans_dropped_total", service="inference",
                                   reason="export_failed")
        self.stop_receiver()
        try:
            t0 = time.monotonic()
            for i in range(10):
                self.ask("down %d %s" % (i, rand_hex(4)), metadata_tp=tp(rand_hex(16), rand_hex(8)))
            self.assertLess(time.monotonic() - t0, 5.0, "requests waited for the exporter")
            deadline = time.monotonic() + 15
            while self.metric_sum("llmserve_trace_spans_dropped_total", service="inference",
                                  reason="export_failed") <= dropped0:
                self.assertLess(time.monotonic(), deadline, "refused connections counted")
                time.sleep(0.2)
        finally:
            self.start_receiver()
        tid = rand_hex(16)
        self.ask("back %s" % rand_hex(4), metadata_tp=tp(tid, rand_hex(8)))
        self.wait_spans(tid, [("llmserve-router", "llmserve.v1.Router/Generate", SERVER),
                              ("llmserve-cache", "llmserve.v1.Cache/Session", SERVER),
                              ("llmserve-inference", "llmserve.v1.Inference/Generate", SERVER)],
                        timeout=15)

    def test_10_a_refused_submit_has_its_span(self):
        # Two submits with one id on one stream: the second is refused (ALREADY_EXISTS)
        # before the router makes a request of it, and still leaves its span.
        first, second = rand_hex(16), rand_hex(16)
        s2 = rand_hex(8)
        rid = "dup-%s" % rand_hex(4)
        started = threading.Event()

        def reqs():  # the second only once the first has started: it is in flight then
            yield self.submit("long one %s" % rand_hex(4), rid, max_tokens=200,
                              traceparent=tp(first, rand_hex(8)),
                              cache_policy=common_pb2.CACHE_POLICY_BYPASS)
            started.wait(CALL_TIMEOUT_S)
            yield self.submit("again %s" % rand_hex(4), rid, traceparent=tp(second, s2))

        evs = []
        for ev in self.generate(reqs(), timeout=CALL_TIMEOUT_S):
            evs.append(ev)
            if ev.WhichOneof("kind") == "started":
                started.set()
        errors = [e.error for e in evs if e.WhichOneof("kind") == "error"]
        self.assertEqual([e.code for e in errors], [grpc.StatusCode.ALREADY_EXISTS.value[0]])
        spans = self.wait_spans(second, [("llmserve-router", "llmserve.v1.Router/Generate",
                                          SERVER)])
        root = self.one(spans, "llmserve-router", "llmserve.v1.Router/Generate")
        self.assertEqual(root["parentSpanId"], s2)
        self.assertEqual(root["attributes"]["rpc.grpc.status_code"],
                         grpc.StatusCode.ALREADY_EXISTS.value[0])
        self.assertEqual(root["attributes"]["llmserve.request_id"], rid)
        self.assertEqual(root["attributes"]["gen_ai.response.finish_reasons"], ["error"])
        # The first went on undisturbed, in its own trace.
        self.wait_spans(first, [("llmserve-inference", "llmserve.v1.Inference/Generate",
                                 SERVER)])

    def test_09_sigterm_flushes_the_queue(self):
        # A router that would send only after a minute, or at exit.
        e = self.otel_env(OTEL_BSP_SCHEDULE_DELAY="60000")
        before = len(self.processes)
        port = self.start_router(e)
        ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        generate, _ = procs.router_calls(ch)
        tid = rand_hex(16)
        self.ask("flush %s" % rand_hex(4), metadata_tp=tp(tid, rand_hex(8)), generate=generate)
        ch.close()
        self.wait_spans(tid, [("llmserve-inference", "llmserve.v1.Inference/Generate", SERVER)])
        time.sleep(0.3)
        self.assertEqual([s for s in self.spans(tid) if s["service"] == "llmserve-router"], [])
        stopped = self.processes[before:]
        del self.processes[before:]
        self.assertEqual(procs.stop_all(stopped), [])
        spans = self.spans(tid)
        self.one(spans, "llmserve-router", "llmserve.v1.Router/Generate", SERVER)
        self.one(spans, "llmserve-router", "llmserve.v1.Inference/Generate", CLIENT)


class _Receivers:
    """Traces.processes and the receiver (restarted by some tests), for the watchdog."""

    def __iter__(self):
        return iter(Traces.processes + [Traces.receiver])


if __name__ == "__main__":
    procs.watchdog("test_traces.py", WATCHDOG_S, _Receivers())
    unittest.main(verbosity=2)
