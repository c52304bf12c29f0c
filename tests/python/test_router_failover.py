#!/usr/bin/python3
"""Mid-stream failover as a Python client sees it.

Starts two llmserve-inference instances of one model (same checkpoint, same name, both
pausing 20 ms after each step with --step-delay-us) in pool "small" and llmserve-router
in front, runs a greedy answer whole, then the same request again, kills (SIGKILL) the
instance serving it after its 10th token and reads on: one more GenerateStarted with
failover set, then the rest of the answer, equal to the whole one.  Run through ctest
(tests/router.cmake), which sets the binary paths, the model directory and PYTHONPATH.
"""
import os
import signal
import threading
import unittest

import grpc

import procs
from procs import env as _env

from llmserve.v1 import common_pb2, router_pb2

CALL_TIMEOUT_S = 60.0
WATCHDOG_S = 180.0
ANSWER_TOKENS = 60
KILL_AFTER = 10


class FailoverFromPython(unittest.TestCase):
    processes = []

    @classmethod
    def setUpClass(cls):
        models = _env("LLMSERVE_ROUTER_MODELS")
        cls.by_addr = {}
        try:
            addrs = []
            for _ in range(2):
                port = procs.start([
                    _env("LLMSERVE_INFERENCE_BIN"), "--listen", "127.0.0.1:0",
                    "--model", os.path.join(models, "small.bin"),
                    "--tokenizer", os.path.join(models, "tok.bin"),
                    "--pool", "small", "--model-name", "tiny-small", "--cpu-threads", "1",
                    "--grace-ms", "500", "--step-delay-us", "20000"], cls.processes)
                addr = "127.0.0.1:%d" % port
                cls.by_addr[addr] = cls.processes[-1]
                addrs.append(addr)
            router = procs.start([
                _env("LLMSERVE_ROUTER_BIN"), "--listen", "127.0.0.1:0",
                "--pool", "small=" + ",".join(addrs), "--tiers", "", "--cache", "",
                "--grace-ms", "500"], cls.processes)
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
    def submit(rid):
        return router_pb2.GenerateRequest(submit=router_pb2.GenerateSubmit(
            request_id=rid, prompt="Once upon a time there was a cat", model_hint="small",
            sampling=common_pb2.SamplingParams(max_tokens=ANSWER_TOKENS, ignore_eos=True)))

    def answer(self, rid, kill_after=None):
        """Events of request rid, on a stream of its own; with kill_after, the instance
        serving it is killed once that many tokens arrived (its address is returned)."""
        finished = threading.Event()

        def requests():
            yield self.submit(rid)
            finished.wait(CALL_TIMEOUT_S)  # half-closing now would be fine too

        evs, victim, tokens = [], None, 0
        for ev in self.generate(requests(), timeout=CALL_TIMEOUT_S):
            evs.append(ev)
            kind = ev.WhichOneof("kind")
            if kind == "token":
                tokens += 1
                if kill_after is not None and tokens == kill_after:
                    victim = [e for e in evs if e.WhichOneof("kind") == "started"][-1]
                    victim = victim.started.instance
                    self.by_addr[victim].send_signal(signal.SIGKILL)
                    self.by_addr[victim].wait(10)
            if kind in ("done", "error"):
                finished.set()
        return evs, victim

    def test_killed_instance_answer_continues_unchanged(self):
        whole, _ = self.answer("whole")
        self.assertEqual(whole[-1].WhichOneof("kind"), "done", whole[-1])
        want = [e.token for e in whole if e.WhichOneof("kind") == "token"]
        self.assertEqual(len(want), ANSWER_TOKENS)

        evs, victim = self.answer("killed", kill_after=KILL_AFTER)
        self.assertIsNotNone(victim, "fewer than %d tokens before the end" % KILL_AFTER)
        kinds = [e.WhichOneof("kind") for e in evs]
        self.assertEqual(kinds[-1], "done", evs[-1])
        self.assertEqual(sum(k in ("done", "error") for k in kinds), 1, kinds)
        got = [e.token for e in evs if e.WhichOneof("kind") == "token"]
        self.assertEqual([t.index for t in got], list(range(ANSWER_TOKENS)))
        self.assertEqual([t.id for t in got], [t.id for t in want])
        self.assertEqual("".join(t.text for t in got), "".join(t.text for t in want))
        failovers = [(i, e.started) for i, e in enumerate(evs)
                     if e.WhichOneof("kind") == "started" and e.started.failover]
        self.assertEqual(len(failovers), 1, failovers)
        at, started = failovers[0]
        self.assertEqual(started.resumed_tokens, kinds[:at].count("token"))
        self.assertGreaterEqual(started.resumed_tokens, KILL_AFTER)
        self.assertNotEqual(started.instance, victim)
        self.assertIn(victim, started.failover_reason)
        self.assertEqual(started.attempt, 2)
        done = evs[-1].done
        self.assertEqual(done.finish_reason, common_pb2.FINISH_REASON_LENGTH)
        self.assertEqual(done.usage.completion_tokens, ANSWER_TOKENS)
        self.assertEqual(done.usage.prompt_tokens, whole[-1].done.usage.prompt_tokens)


if __name__ == "__main__":
    procs.watchdog("test_router_failover.py", WATCHDOG_S, FailoverFromPython.processes)
    unittest.main(verbosity=2)
