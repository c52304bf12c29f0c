#!/usr/bin/python3
"""The inference service's trace spans, as a user would find them in Jaeger.

Starts the OTLP receiver stand-in (tests/otlp/receiver.py --strict), an
llmserve-inference exporting to it (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_BSP_SCHEDULE_DELAY)
and one with no OTEL_* environment (tracing off), calls llmserve.v1.Inference/Generate
directly with known traceparents, and checks the spans the receiver rebuilt against the
events the service sent: one SERVER span per submit, its attributes, its queue, prefill
and decode children, its first_token event, and the outcome's code.  The traced instance
holds an idle batch open for HOLD_MS, so that a request waits in the queue long enough to
be cancelled or to miss its deadline there.  Run through ctest (tests/otlp.cmake), which
sets the binary path, the model directory and PYTHONPATH.
"""
import json
import os
import queue
import secrets
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

import grpc

import procs
from procs import env as _env

from llmserve.v1 import common_pb2, inference_pb2

CALL_TIMEOUT_S = 30.0
WATCHDOG_S = 100.0
HOLD_MS = 200
MODEL_NAME = "tiny-traced"
# Span times come from the service's monotonic timestamps, each turned into wall-clock
# time on its own: two spans that share a timestamp may differ by a few microseconds.
TOL_NS = 200_000

KIND_INTERNAL, KIND_SERVER = 1, 2
STATUS_UNSET, STATUS_ERROR = 0, 2
OK, CANCELLED, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 3, 4


def traceparent(trace_id, span_id, flags="01"):
    return "00-%s-%s-%s" % (trace_id, span_id, flags)


class Stream:
    """One Generate call: submits and cancels go in when sent; events are gathered per
    request id by a reader thread."""

    def __init__(self, generate):
        self.outbox = queue.Queue()
        self.events = {}
        self.terminal = {}
        self.cv = threading.Condition()
        self.call = generate(self._requests(), timeout=CALL_TIMEOUT_S)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _requests(self):
        while True:
            m = self.outbox.get()
            if m is None:
                return
            yield m

    def _read(self):
        try:
            for ev in self.call:
                with self.cv:
                    self.events.setdefault(ev.request_id, []).append(ev)
                    if ev.WhichOneof("kind") in ("done", "error"):
                        self.terminal[ev.request_id] = ev
                    self.cv.notify_all()
        except grpc.RpcError:
            pass

    def submit(self, rid, tp="", prompt="Once upon a time", messages=None, timeout_ms=0,
               **sampling):
        sub = inference_pb2.InferenceSubmit(request_id=rid, traceparent=tp, timeout_ms=timeout_ms,
                                            sampling=common_pb2.SamplingParams(**sampling))
        if messages:
            sub.messages.extend(common_pb2.ChatMessage(role=role, content=text)
                                for role, text in messages)
        else:
            sub.prompt = prompt
        self.outbox.put(inference_pb2.InferenceRequest(submit=sub))

    def cancel(self, rid):
        self.outbox.put(inference_pb2.InferenceRequest(
            cancel=inference_pb2.InferenceCancel(request_id=rid)))

    def wait(self, rid):
        """The request's events once its terminal event came."""
        with self.cv:
            if not self.cv.wait_for(lambda: rid in self.terminal, CALL_TIMEOUT_S):
                raise AssertionError("no terminal event for %s" % rid)
            return self.events[rid]

    def close(self):
        self.outbox.put(None)
        self.reader.join(CALL_TIMEOUT_S)


class InferenceTraces(unittest.TestCase):
    processes = []

    @classmethod
    def setUpClass(cls):
        models = _env("LLMSERVE_ROUTER_MODELS")
        receiver = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "otlp",
                                "receiver.py")
        plain = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        argv = [_env("LLMSERVE_INFERENCE_BIN"), "--listen", "127.0.0.1:0",
                "--model", os.path.join(models, "small.bin"),
                "--tokenizer", os.path.join(models, "tok.bin"),
                "--model-name", MODEL_NAME, "--cpu-threads", "1", "--grace-ms", "500"]
        try:
            cls.receiver = procs.start([sys.executable, receiver, "--strict"], cls.processes)
            traced = dict(plain, OTEL_BSP_SCHEDULE_DELAY="100",
                          OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:%d" % cls.receiver)
            cls.traced_port = procs.start(argv + ["--max-queue-delay-ms", str(HOLD_MS)],
                                          cls.processes, env=traced)
            cls.plain_port = procs.start(argv, cls.processes, env=plain)
        except Exception:
            cls.tearDownClass()
            raise
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % cls.traced_port,
                                            options=[("grpc.enable_http_proxy", 0)])
        cls.plain_channel = grpc.insecure_channel("127.0.0.1:%d" % cls.plain_port,
                                                  options=[("grpc.enable_http_proxy", 0)])
        cls.generate, cls.info = cls.calls(cls.channel)
        cls.plain_generate, cls.plain_info = cls.calls(cls.plain_channel)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "plain_channel", None) is not None:
            cls.plain_channel.close()
        procs.stop_suite(cls, lambda p: p.args[0] == _env("LLMSERVE_INFERENCE_BIN"))

    @staticmethod
    def calls(channel):
        return procs.inference_calls(channel)

    # ---- the receiver ---------------------------------------------------------------

    def receiver_get(self, path):
        url = "http://127.0.0.1:%d%s" % (self.receiver, path)
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def spans_of(self, trace_id, count):
        """The trace's spans once count of them arrived (it waits up to 10 s)."""
        deadline = time.monotonic() + 10
        while True:
            spans = self.receiver_get("/_receiver/traces").get(trace_id, [])
            if len(spans) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(len(spans), count, "spans of trace %s: %r" % (trace_id, spans))
        return spans

    def server_span(self, request_id, count):
        """The SERVER span whose llmserve.request_id is request_id and the other spans of
        its trace, once count spans of that trace arrived."""
        deadline = time.monotonic() + 10
        while True:
            for trace_id, spans in self.receiver_get("/_receiver/traces").items():
                for s in spans:
                    if s["attributes"].get("llmserve.request_id") == request_id:
                        spans = self.spans_of(trace_id, count)
                        server = [x for x in spans if x["kind"] == KIND_SERVER]
                        self.assertEqual(len(server), 1, spans)
                        return server[0], [x for x in spans if x is not server[0]]
            self.assertLess(time.monotonic(), deadline, "no span for %s" % request_id)
            time.sleep(0.05)

    def assertRejectedNone(self):
        self.assertEqual(self.receiver_get("/_receiver/rejected"), [])

    # ---- the checks -----------------------------------------------------------------

    def check_rpc(self, span, request_id, code, status_code):
        self.assertEqual(span["name"], "llmserve.v1.Inference/Generate")
        self.assertEqual(span["kind"], KIND_SERVER)
        a = span["attributes"]
        self.assertEqual(a["rpc.system"], "grpc")
        self.assertEqual(a["rpc.service"], "llmserve.v1.Inference")
        self.assertEqual(a["rpc.method"], "Generate")
        self.assertEqual(a["llmserve.request_id"], request_id)
        self.assertEqual(a["gen_ai.request.model"], MODEL_NAME)
        self.assertEqual(a["rpc.grpc.status_code"], code)
        self.assertEqual(span["status"]["code"], status_code)
        self.assertLessEqual(span["start"], span["end"])

    def check_stages(self, server, children, names, done=None):
        """children are the named stages, in order, children of server, each following
        the one before; each matches the Done event's timings when given."""
        children = sorted(children, key=lambda s: s["start"])
        self.assertEqual([c["name"] for c in children], names)
        prev_end = server["start"]
        for c in children:
            self.assertEqual(c["kind"], KIND_INTERNAL)
            self.assertEqual(c["traceId"], server["traceId"])
            self.assertEqual(c["parentSpanId"], server["spanId"])
            self.assertLessEqual(c["start"], c["end"])
            self.assertGreaterEqual(c["start"], prev_end - TOL_NS, c["name"])
            self.assertLessEqual(c["end"], server["end"] + TOL_NS, c["name"])
            prev_end = c["end"]
        self.assertLessEqual(abs(children[0]["start"] - server["start"]), TOL_NS)
        if done is not None:
            tm = done.timings
            want = {"queue": tm.inference_queue_us, "prefill": tm.prefill_us,
                    "decode": tm.decode_us}
            for c in children:
                self.assertLessEqual(abs((c["end"] - c["start"]) - want[c["name"]] * 1000),
                                     TOL_NS, c["name"])
        return {c["name"]: c for c in children}

    def test_01_spans_of_completed_requests(self):
        info = self.info(inference_pb2.InfoRequest(), timeout=CALL_TIMEOUT_S)
        self.assertEqual(info.model, MODEL_NAME)
        t1, t2, parent = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(8)
        st = Stream(self.generate)
        # Two requests on one stream, one span each; they join one batch after the hold.
        st.submit("text-1", traceparent(t1, parent), max_tokens=12, temperature=0.7,
                  top_p=0.9, top_k=40, seed=1234, has_seed=True, ignore_eos=True)
        st.submit("chat-1", traceparent(t2, parent),
                  messages=[(common_pb2.CHAT_ROLE_USER, "Tell me a story")], max_tokens=5,
                  ignore_eos=True)
        evs = {rid: st.wait(rid) for rid in ("text-1", "chat-1")}
        st.close()
        for rid, t, chat, max_tokens in (("text-1", t1, False, 12), ("chat-1", t2, True, 5)):
            kinds = [e.WhichOneof("kind") for e in evs[rid]]
            self.assertEqual(kinds[-1], "done", kinds)
            started = evs[rid][0].started
            done = evs[rid][-1].done
            spans = self.spans_of(t, 4)
            server = [s for s in spans if s["kind"] == KIND_SERVER]
            self.assertEqual(len(server), 1, spans)
            server = server[0]
            self.check_rpc(server, rid, OK, STATUS_UNSET)
            self.assertEqual(server["traceId"], t)
            self.assertEqual(server["parentSpanId"], parent)
            a = server["attributes"]
            self.assertEqual(a["gen_ai.operation.name"], "chat" if chat else "text_completion")
            self.assertEqual(a["gen_ai.request.max_tokens"], max_tokens)
            self.assertEqual(a["gen_ai.usage.input_tokens"], done.usage.prompt_tokens)
            self.assertEqual(a["gen_ai.usage.output_tokens"], done.usage.completion_tokens)
            self.assertEqual(a["gen_ai.usage.output_tokens"], max_tokens)
            self.assertEqual(a["gen_ai.response.finish_reasons"], ["length"])
            self.assertEqual(a["llmserve.batch_size"], started.batch_size)
            self.assertEqual(a["llmserve.backend"], info.backend)
            if chat:
                self.assertAlmostEqual(a["gen_ai.request.temperature"], 0.0)
                self.assertNotIn("gen_ai.request.top_k", a)
                self.assertNotIn("gen_ai.request.seed", a)
            else:
                self.assertAlmostEqual(a["gen_ai.request.temperature"], 0.7, places=5)
                self.assertAlmostEqual(a["gen_ai.request.top_p"], 0.9, places=5)
                self.assertEqual(a["gen_ai.request.top_k"], 40)
                self.assertEqual(a["gen_ai.request.seed"], 1234)
            stages = self.check_stages(server, [s for s in spans if s is not server],
                                       ["queue", "prefill", "decode"], done)
            if rid == "text-1":  # the first to arrive waits out the whole hold
                self.assertGreaterEqual(stages["queue"]["end"] - stages["queue"]["start"],
                                        HOLD_MS * 1_000_000 - TOL_NS)
            self.assertEqual(stages["prefill"]["attributes"]["llmserve.prompt_tokens"],
                             done.usage.prompt_tokens)
            self.assertEqual(stages["decode"]["attributes"]["llmserve.tokens"], max_tokens)
            for c in stages.values():
                self.assertNotIn("rpc.grpc.status_code", c["attributes"])  # not a call
                self.assertEqual(c["status"]["code"], STATUS_UNSET)
            first = [e for e in server["events"] if e["name"] == "first_token"]
            self.assertEqual(len(first), 1, server["events"])
            self.assertGreaterEqual(first[0]["time"], server["start"])
            self.assertLessEqual(first[0]["time"], server["end"])
            self.assertLessEqual(abs(first[0]["time"] - stages["decode"]["start"]), TOL_NS)
        # Two requests in one batch: the second to join saw the first.
        self.assertEqual(sorted(e[0].started.batch_size for e in evs.values()), [1, 2])
        self.assertRejectedNone()

    def test_02_malformed_traceparent_starts_a_new_trace(self):
        bad_trace, bad_parent = secrets.token_hex(16), secrets.token_hex(8)
        st = Stream(self.generate)
        st.submit("upper-1", traceparent(bad_trace.upper(), bad_parent.upper()), max_tokens=4,
                  ignore_eos=True)
        evs = st.wait("upper-1")
        st.close()
        self.assertEqual(evs[-1].WhichOneof("kind"), "done")
        self.assertEqual(evs[-1].done.usage.completion_tokens, 4)
        server, children = self.server_span("upper-1", 4)
        self.check_rpc(server, "upper-1", OK, STATUS_UNSET)
        self.assertEqual(server["parentSpanId"], "")
        self.assertNotEqual(server["traceId"], bad_trace)
        self.assertEqual(len(server["traceId"]), 32)
        self.check_stages(server, children, ["queue", "prefill", "decode"], evs[-1].done)
        self.assertIsNone(self.receiver_get("/_receiver/trace/" + bad_trace))

    def test_03_invalid_request(self):
        t, parent = secrets.token_hex(16), secrets.token_hex(8)
        st = Stream(self.generate)
        st.submit("hot-1", traceparent(t, parent), max_tokens=4, temperature=5)
        evs = st.wait("hot-1")
        st.close()
        self.assertEqual(evs[-1].WhichOneof("kind"), "error")
        self.assertEqual(evs[-1].error.code, INVALID_ARGUMENT)
        (server,) = self.spans_of(t, 1)
        # INVALID_ARGUMENT is the caller's fault: a SERVER span's status stays unset.
        self.check_rpc(server, "hot-1", INVALID_ARGUMENT, STATUS_UNSET)
        self.assertEqual(server["parentSpanId"], parent)
        a = server["attributes"]
        self.assertEqual(a["gen_ai.response.finish_reasons"], ["error"])
        self.assertEqual(a["gen_ai.request.temperature"], 5.0)
        self.assertEqual(a["gen_ai.usage.output_tokens"], 0)

    def test_04_deadline_in_the_queue(self):
        # Its deadline passes while the idle batch is held open: it never joins.
        t, parent = secrets.token_hex(16), secrets.token_hex(8)
        st = Stream(self.generate)
        st.submit("late-1", traceparent(t, parent), timeout_ms=HOLD_MS // 4, max_tokens=4)
        evs = st.wait("late-1")
        st.close()
        self.assertEqual([e.WhichOneof("kind") for e in evs], ["error"])
        self.assertEqual(evs[-1].error.code, DEADLINE_EXCEEDED)
        spans = self.spans_of(t, 2)
        (server,) = [s for s in spans if s["kind"] == KIND_SERVER]
        # DEADLINE_EXCEEDED is a server error: the SERVER span's status is Error.
        self.check_rpc(server, "late-1", DEADLINE_EXCEEDED, STATUS_ERROR)
        self.assertEqual(server["status"]["message"], evs[-1].error.message)
        self.assertEqual(server["attributes"]["gen_ai.response.finish_reasons"], ["error"])
        self.assertEqual(server["attributes"]["gen_ai.usage.output_tokens"], 0)
        self.assertNotIn("llmserve.batch_size", server["attributes"])
        self.assertEqual(server["events"], [])
        stages = self.check_stages(server, [s for s in spans if s is not server], ["queue"])
        self.assertEqual(stages["queue"]["status"]["code"], STATUS_ERROR)
        self.assertLessEqual(abs(stages["queue"]["end"] - server["end"]), TOL_NS)

    def test_05_cancelled_in_the_queue(self):
        t, parent = secrets.token_hex(16), secrets.token_hex(8)
        st = Stream(self.generate)
        st.submit("gone-1", traceparent(t, parent), max_tokens=8)
        time.sleep(HOLD_MS / 4000)
        st.cancel("gone-1")
        evs = st.wait("gone-1")
        st.close()
        self.assertEqual([e.WhichOneof("kind") for e in evs], ["done"])
        self.assertEqual(evs[-1].done.finish_reason, common_pb2.FINISH_REASON_CANCELLED)
        spans = self.spans_of(t, 2)
        (server,) = [s for s in spans if s["kind"] == KIND_SERVER]
        self.check_rpc(server, "gone-1", CANCELLED, STATUS_UNSET)
        self.assertEqual(server["attributes"]["gen_ai.response.finish_reasons"], ["cancelled"])
        stages = self.check_stages(server, [s for s in spans if s is not server], ["queue"])
        self.assertEqual(stages["queue"]["status"]["code"], STATUS_ERROR)  # ended CANCELLED

    def test_06_sampled_off_parent(self):
        off, on, parent = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(8)
        st = Stream(self.generate)
        st.submit("off-1", traceparent(off, parent, "00"), max_tokens=3, ignore_eos=True)
        off_evs = st.wait("off-1")
        st.submit("on-1", traceparent(on, parent), max_tokens=3, ignore_eos=True)
        st.wait("on-1")
        st.close()
        self.assertEqual(off_evs[-1].WhichOneof("kind"), "done")
        # The later request's spans arrived, so the earlier one's would have too.
        self.spans_of(on, 4)
        self.assertIsNone(self.receiver_get("/_receiver/trace/" + off))

    def test_07_tracing_off(self):
        info = self.plain_info(inference_pb2.InfoRequest(), timeout=CALL_TIMEOUT_S)
        self.assertEqual(info.model, MODEL_NAME)
        quiet, marker, parent = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(8)
        st = Stream(self.plain_generate)
        st.submit("plain-1", traceparent(quiet, parent), max_tokens=6, ignore_eos=True)
        st.submit("plain-bad", traceparent(quiet, parent), temperature=5)
        evs = st.wait("plain-1")
        bad = st.wait("plain-bad")
        st.close()
        self.assertEqual([e.WhichOneof("kind") for e in evs][-1], "done")
        self.assertEqual(evs[-1].done.usage.completion_tokens, 6)
        self.assertEqual(bad[-1].error.code, INVALID_ARGUMENT)
        st = Stream(self.generate)
        st.submit("marker-1", traceparent(marker, parent), max_tokens=2, ignore_eos=True)
        st.wait("marker-1")
        st.close()
        self.spans_of(marker, 4)
        self.assertIsNone(self.receiver_get("/_receiver/trace/" + quiet))
        self.assertRejectedNone()


if __name__ == "__main__":
    procs.watchdog("test_inference_traces.py", WATCHDOG_S, InferenceTraces.processes)
    unittest.main(verbosity=2)
