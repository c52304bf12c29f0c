#!/usr/bin/python3
"""The router called from Python, as a user in another language would.

Starts the real suite on loopback (memcached, llmserve-cache, two llmserve-inference
instances with tiny models, llmserve-router) and talks to Router.Generate and
Router.Complete with Debian's python3-grpcio and stubs generated from
proto/llmserve/v1 by protoc --python_out.  Run through ctest (tests/router.cmake), which
sets the binary paths, the model directory and PYTHONPATH.
"""
import os
import sys
import threading
import time
import unittest

import grpc

import procs
from procs import env as _env

from llmserve.v1 import common_pb2, router_pb2

CALL_TIMEOUT_S = 60.0
WATCHDOG_S = 240.0


class RouterFromPython(unittest.TestCase):
    processes = []

    @classmethod
    def start(cls, argv):
        return procs.start(argv, cls.processes)

    @classmethod
    def setUpClass(cls):
        models = _env("LLMSERVE_ROUTER_MODELS")
        cls.memcached, mc_port = procs.start_memcached()
        try:
            cache = cls.start([_env("LLMSERVE_CACHE_BIN"), "--listen", "127.0.0.1:0",
                               "--memcached", "--SERVER=127.0.0.1:%d" % mc_port])
            ports = {}
            for pool in ("small", "large"):
                ports[pool] = cls.start([
                    _env("LLMSERVE_INFERENCE_BIN"), "--listen", "127.0.0.1:0",
                    "--model", os.path.join(models, pool + ".bin"),
                    "--tokenizer", os.path.join(models, "tok.bin"),
                    "--pool", pool, "--model-name", "tiny-" + pool, "--cpu-threads", "1",
                    "--grace-ms", "500"])
            cls.router_proc_index = len(cls.processes)
            router = cls.start([
                _env("LLMSERVE_ROUTER_BIN"), "--listen", "127.0.0.1:0",
                "--pool", "small=127.0.0.1:%d" % ports["small"],
                "--pool", "large=127.0.0.1:%d" % ports["large"],
                "--cache", "127.0.0.1:%d" % cache, "--grace-ms", "500"])
        except Exception:
            cls.tearDownClass()
            raise
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % router,
                                            options=[("grpc.enable_http_proxy", 0)])
        cls.generate, cls.complete = procs.router_calls(cls.channel)

    @classmethod
    def tearDownClass(cls):
        procs.stop_suite(cls, lambda p: p.args[0] == os.environ.get("LLMSERVE_ROUTER_BIN"))

    @staticmethod
    def submit(rid, prompt, max_tokens=16, **kw):
        return router_pb2.GenerateRequest(submit=router_pb2.GenerateSubmit(
            request_id=rid, prompt=prompt,
            sampling=common_pb2.SamplingParams(max_tokens=max_tokens), **kw))

    def collect(self, requests):
        """Sends the requests on one stream; returns {request_id: [events]}."""
        events = {}
        for ev in self.generate(iter(requests), timeout=CALL_TIMEOUT_S):
            events.setdefault(ev.request_id, []).append(ev)
        return events

    def check_shape(self, evs):
        """started+, token*, exactly one terminal at the end; indexes count up."""
        kinds = [e.WhichOneof("kind") for e in evs]
        self.assertIn(kinds[-1], ("done", "error"), kinds)
        self.assertEqual(sum(k in ("done", "error") for k in kinds), 1, kinds)
        tokens = [e.token for e in evs if e.WhichOneof("kind") == "token"]
        self.assertEqual([t.index for t in tokens], list(range(len(tokens))))
        return tokens

    def test_01_tokens_stream_as_they_are_produced(self):
        it = self.generate(iter([self.submit("py-1", "Once upon a time", max_tokens=24)]),
                           timeout=CALL_TIMEOUT_S)
        evs = []
        for ev in it:  # arrives event by event, not as one reply
            evs.append(ev)
        tokens = self.check_shape(evs)
        started = evs[0].started
        self.assertEqual(evs[0].WhichOneof("kind"), "started")
        self.assertEqual(started.pool, "small")
        self.assertEqual(started.model, "tiny-small")
        self.assertTrue(started.route_reason.startswith("complexity"), started.route_reason)
        done = evs[-1].done
        self.assertEqual(done.finish_reason, common_pb2.FINISH_REASON_LENGTH)
        self.assertEqual(done.usage.completion_tokens, len(tokens))
        self.assertEqual(len(tokens), 24)
        self.assertGreater(done.timings.ttft_us, 0)
        self.assertGreaterEqual(done.timings.total_us, done.timings.ttft_us)
        self.assertEqual(it.code(), grpc.StatusCode.OK)

    def test_02_several_requests_on_one_stream_and_a_cache_hit(self):
        prompt = ("Why is the sky blue? Explain step by step, compare with sunsets, and prove "
                  "the equation 2+2=4.")
        first = self.collect([self.submit("a", prompt), self.submit("b", "A small dog")])
        self.assertEqual(set(first), {"a", "b"})
        self.check_shape(first["a"])
        self.assertEqual(first["a"][0].started.pool, "large")
        text = "".join(e.token.text for e in first["a"] if e.WhichOneof("kind") == "token")
        hit = None
        for _ in range(40):
            again = self.collect([self.submit("a2", prompt)])["a2"]
            if again[0].started.cache_hit:
                hit = again
                break
            time.sleep(0.05)
        self.assertIsNotNone(hit, "the repeated prompt never hit the cache")
        self.check_shape(hit)
        self.assertEqual("".join(e.token.text for e in hit if e.WhichOneof("kind") == "token"),
                         text)
        self.assertTrue(all(e.token.cache_hit for e in hit if e.WhichOneof("kind") == "token"))
        # By default a hit is replayed as one token event holding the whole answer.
        self.assertEqual(sum(1 for e in hit if e.WhichOneof("kind") == "token"), 1)
        self.assertEqual(hit[-1].done.usage.completion_tokens,
                         first["a"][-1].done.usage.completion_tokens)

    def test_03_bad_request_is_invalid_argument(self):
        evs = self.collect([self.submit("bad", "x", model_hint="nope"),
                            router_pb2.GenerateRequest(submit=router_pb2.GenerateSubmit(
                                request_id="empty"))])
        for rid, needle in (("bad", "not a pool"), ("empty", "neither prompt")):
            self.assertEqual(len(evs[rid]), 1, evs[rid])
            err = evs[rid][0].error
            self.assertEqual(err.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
            self.assertIn(needle, err.message)

    def test_04_cancel_from_python(self):
        done = threading.Event()

        def requests():
            yield self.submit("c", "Once upon a time", max_tokens=250,
                              cache_policy=common_pb2.CACHE_POLICY_BYPASS)
            yield router_pb2.GenerateRequest(cancel=router_pb2.GenerateCancel(request_id="c"))
            done.wait(CALL_TIMEOUT_S)

        evs = []
        for ev in self.generate(requests(), timeout=CALL_TIMEOUT_S):
            evs.append(ev)
            if ev.WhichOneof("kind") in ("done", "error"):
                done.set()
        self.check_shape(evs)
        # The tiny model may finish first; either way one terminal event, and a cancel
        # that won the race says so.
        last = evs[-1].done
        self.assertIn(last.finish_reason,
                      (common_pb2.FINISH_REASON_CANCELLED, common_pb2.FINISH_REASON_LENGTH))

    def test_05_complete_unary(self):
        resp = self.complete(router_pb2.CompleteRequest(request=router_pb2.GenerateSubmit(
            prompt="The cat", sampling=common_pb2.SamplingParams(max_tokens=8),
            model_hint="large")), timeout=CALL_TIMEOUT_S)
        self.assertTrue(resp.request_id)
        self.assertEqual(resp.route.pool, "large")
        self.assertEqual(resp.route.route_reason, "hint")
        self.assertEqual(resp.usage.completion_tokens, 8)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.complete(router_pb2.CompleteRequest(request=router_pb2.GenerateSubmit(
                prompt="x", sampling=common_pb2.SamplingParams(temperature=5))),
                timeout=CALL_TIMEOUT_S)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("temperature", ctx.exception.details())


def _watchdog():
    sys.stderr.write("test_router.py: watchdog: no result after %.0f s\n" % WATCHDOG_S)
    for p in RouterFromPython.processes:
        if p.poll() is None:
            p.kill()
    os._exit(1)


if __name__ == "__main__":
    timer = threading.Timer(WATCHDOG_S, _watchdog)
    timer.daemon = True
    timer.start()
    unittest.main(verbosity=2)
