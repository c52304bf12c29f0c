#!/usr/bin/python3
"""A saturated pool through the router, from Python (issue 18).

One llmserve-inference instance serving the slow test model, holding one request running
and one waiting (--max-batch 1 --max-queue 1) and frozen (SIGSTOP) once it holds two long
answers, behind llmserve-router with a queue of 2
for its pool.  Long answers fill the instance and the router's queue; the next request is
refused with RESOURCE_EXHAUSTED and a retry hint: the error event's retry_after_ms on
Generate, the grpc-retry-pushback-ms trailer (which gRPC retry policies honour) on
Complete.  Cancelling a queued request ends it with one terminal event; the instance
stays SERVING.  Run through ctest (tests/router.cmake).
"""
import os
import queue
import signal
import sys
import threading
import time
import unittest

import grpc

import procs
from procs import env as _env

from llmserve.v1 import common_pb2, router_pb2

CALL_TIMEOUT_S = 60.0
WATCHDOG_S = 180.0


class AdmissionFromPython(unittest.TestCase):
    processes = []

    @classmethod
    def setUpClass(cls):
        models = _env("LLMSERVE_ROUTER_MODELS")
        try:
            cls.inference_port = procs.start([
                _env("LLMSERVE_INFERENCE_BIN"), "--listen", "127.0.0.1:0",
                "--model", os.path.join(models, "slow.bin"),
                "--tokenizer", os.path.join(models, "tok.bin"),
                "--pool", "small", "--model-name", "slow", "--cpu-threads", "1",
                "--kv-budget-tokens", "8192", "--max-batch", "1", "--max-queue", "1",
                "--grace-ms", "500"], cls.processes)
            router = procs.start([
                _env("LLMSERVE_ROUTER_BIN"), "--listen", "127.0.0.1:0",
                "--pool", "small=127.0.0.1:%d" % cls.inference_port, "--tiers", "",
                "--queue-max", "2", "--grace-ms", "500"], cls.processes)
        except Exception:
            cls.tearDownClass()
            raise
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % router,
                                            options=[("grpc.enable_http_proxy", 0)])
        cls.generate, cls.complete = procs.router_calls(cls.channel)

    @classmethod
    def tearDownClass(cls):
        procs.stop_suite(cls)

    @staticmethod
    def submit(rid, max_tokens=1500):
        return router_pb2.GenerateRequest(submit=router_pb2.GenerateSubmit(
            request_id=rid, prompt="Once upon a time there was a cat",
            sampling=common_pb2.SamplingParams(max_tokens=max_tokens, ignore_eos=True)))

    def instance_health(self):
        ch = grpc.insecure_channel("127.0.0.1:%d" % self.inference_port,
                                   options=[("grpc.enable_http_proxy", 0)])
        # grpc.health.v1 by hand: the request {service: ""} is empty, the reply's one
        # field is status (1), a varint.
        check = ch.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=lambda _: b"",
                               response_deserializer=lambda b: b)
        try:
            reply = check(None, timeout=10)
            return reply[1] if len(reply) == 2 and reply[0] == 0x08 else 0
        finally:
            ch.close()

    def test_full_queue_refuses_with_a_retry_hint_and_cancel_ends_a_queued_request(self):
        outbox = queue.Queue()

        def requests():
            while True:
                item = outbox.get()
                if item is None:
                    return
                yield item

        events = {}
        got = threading.Condition()

        def reader(stream):
            for ev in stream:
                with got:
                    events.setdefault(ev.request_id, []).append(ev)
                    got.notify_all()

        def wait_for(pred, seconds=CALL_TIMEOUT_S):
            end = time.time() + seconds
            with got:
                while not pred():
                    left = end - time.time()
                    self.assertGreater(left, 0, "timed out; events: %s" % sorted(events))
                    got.wait(left)

        def terminal(rid):
            return [e for e in events.get(rid, []) if e.WhichOneof("kind") in ("done", "error")]

        stream = self.generate(requests(), timeout=CALL_TIMEOUT_S * 2)
        t = threading.Thread(target=reader, args=(stream,), daemon=True)
        t.start()
        # a1 runs, a2 waits in the instance, q1 and q2 in the router's queue.
        outbox.put(self.submit("a1"))
        wait_for(lambda: any(e.WhichOneof("kind") == "token" for e in events.get("a1", [])))
        for rid in ("a2", "q1", "q2"):
            outbox.put(self.submit(rid))
        time.sleep(0.3)
        # Frozen, the instance holds a1 and a2 as long as the test needs (its stream stays
        # open: it stays healthy).
        inference = self.processes[0]
        inference.send_signal(signal.SIGSTOP)
        outbox.put(self.submit("x"))
        wait_for(lambda: terminal("x"))
        err = terminal("x")[0]
        self.assertEqual(err.WhichOneof("kind"), "error")
        self.assertEqual(err.error.code, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
        self.assertIn("at capacity", err.error.message)
        self.assertNotIn("no healthy", err.error.message)
        self.assertGreater(err.error.retry_after_ms, 0)

        with self.assertRaises(grpc.RpcError) as ctx:
            self.complete(router_pb2.CompleteRequest(request=router_pb2.GenerateSubmit(
                prompt="Once upon a time", sampling=common_pb2.SamplingParams(max_tokens=4))),
                timeout=CALL_TIMEOUT_S)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        trailers = dict(ctx.exception.trailing_metadata() or ())
        self.assertIn("grpc-retry-pushback-ms", trailers)
        self.assertGreater(int(trailers["grpc-retry-pushback-ms"]), 0)

        # Cancel while queued: one terminal event, Done(CANCELLED).
        outbox.put(router_pb2.GenerateRequest(cancel=router_pb2.GenerateCancel(request_id="q1")))
        wait_for(lambda: terminal("q1"))
        self.assertEqual([e.WhichOneof("kind") for e in events["q1"]], ["done"])
        self.assertEqual(events["q1"][0].done.finish_reason,
                         common_pb2.FINISH_REASON_CANCELLED)
        inference.send_signal(signal.SIGCONT)
        self.assertEqual(self.instance_health(), 1)  # SERVING

        for rid in ("a1", "a2", "q2"):
            outbox.put(router_pb2.GenerateRequest(cancel=router_pb2.GenerateCancel(request_id=rid)))
        outbox.put(None)
        t.join(CALL_TIMEOUT_S)
        for rid in ("a1", "a2", "q1", "q2", "x"):
            self.assertEqual(len(terminal(rid)), 1, rid)
        self.assertEqual(self.instance_health(), 1)


if __name__ == "__main__":
    procs.watchdog("test_router_admission.py", WATCHDOG_S, AdmissionFromPython.processes)
    unittest.main(verbosity=2)
