#!/usr/bin/python3
"""Second-language client test for libs/rpc: calls llmserve-test-echo from Python.

Uses Debian's python3-grpcio exactly as a user in another language would, against the
real echo server process (tests/echo/echo_server.c).  Run as

    LLMSERVE_ECHO_SERVER=<path to llmserve-test-echo> PYTHONPATH=<dir with echo_pb2.py> \
        /usr/bin/python3 tests/python/test_echo.py

The grpc.health.v1 messages are encoded by hand: generated stubs for
grpc/health/v1/health.proto would create a `grpc/` package that shadows grpcio.
"""
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

import grpc

import procs

import echo_pb2

EchoRequest = echo_pb2.EchoRequest
EchoReply = echo_pb2.EchoReply

UNARY = "/llmserve.test.Echo/Unary"
STREAM = "/llmserve.test.Echo/Stream"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"

# grpc.health.v1.HealthCheckResponse.ServingStatus
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
START_TIMEOUT_S = 10.0  # for the LISTENING line
STOP_TIMEOUT_S = 15.0  # SIGTERM to exit; the server's default grace is 2 s
CALL_TIMEOUT_S = 10.0  # every call has a deadline so that no test can hang
WATCHDOG_S = 120.0  # the whole script; far above its normal few seconds


# ---- hand-written grpc.health.v1 codec ------------------------------------------

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def encode_health_request(service):
    """HealthCheckRequest { string service = 1; } (empty string: field omitted)."""
    data = service.encode("utf-8")
    if not data:
        return b""
    return b"\x0a" + _varint(len(data)) + data


def decode_health_response(buf):
    """HealthCheckResponse { ServingStatus status = 1; } -> int status."""
    status = UNKNOWN
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            if field == 1:
                status = value
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError("unexpected wire type %d" % wire)
    if pos != len(buf):
        raise ValueError("truncated field")
    return status


class HealthCodecTest(unittest.TestCase):
    """The hand-written codec itself, so that health failures point at the server."""

    def test_codec(self):
        self.assertEqual(encode_health_request(""), b"")
        self.assertEqual(encode_health_request("ab"), b"\x0a\x02ab")
        self.assertEqual(encode_health_request("x" * 200)[:3], b"\x0a\xc8\x01")
        self.assertEqual(decode_health_response(b""), UNKNOWN)
        self.assertEqual(decode_health_response(b"\x08\x01"), SERVING)
        self.assertEqual(decode_health_response(b"\x08\x02"), NOT_SERVING)


# ---- the server process ---------------------------------------------------------

class EchoServerTest(unittest.TestCase):
    proc = None
    channel = None

    @classmethod
    def setUpClass(cls):
        binary = os.environ.get("LLMSERVE_ECHO_SERVER")
        if not binary or not os.access(binary, os.X_OK):
            raise RuntimeError("LLMSERVE_ECHO_SERVER must name the llmserve-test-echo binary")
        cls.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--grace-ms", "2000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0)
        try:
            cls.port = procs.read_serving(cls.proc, START_TIMEOUT_S)
        except Exception:
            cls.proc.kill()
            cls.proc.wait()
            raise
        threading.Thread(target=procs.drain, args=(cls.proc.stdout,), daemon=True).start()
        cls.target = "127.0.0.1:%d" % cls.port
        cls.channel = cls.new_channel()
        cls.unary = cls.channel.unary_unary(
            UNARY, request_serializer=EchoRequest.SerializeToString,
            response_deserializer=EchoReply.FromString)
        cls.stream = cls.channel.stream_stream(
            STREAM, request_serializer=EchoRequest.SerializeToString,
            response_deserializer=EchoReply.FromString)
        cls.health_check = cls.channel.unary_unary(
            HEALTH_CHECK, request_serializer=encode_health_request,
            response_deserializer=decode_health_response)
        cls.health_watch = cls.channel.unary_stream(
            HEALTH_WATCH, request_serializer=encode_health_request,
            response_deserializer=decode_health_response)

    @classmethod
    def new_channel(cls):
        # No proxy: an http_proxy in the environment must not reroute 127.0.0.1.
        return grpc.insecure_channel(cls.target, options=[("grpc.enable_http_proxy", 0)])

    @classmethod
    def tearDownClass(cls):
        if cls.channel is not None:
            cls.channel.close()
        if cls.proc is None:
            return
        if cls.proc.poll() is None:
            cls.proc.send_signal(signal.SIGTERM)
            try:
                rc = cls.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
                cls.proc.wait()
                raise AssertionError(
                    "server did not exit within %.0f s of SIGTERM" % STOP_TIMEOUT_S)
        else:
            rc = cls.proc.returncode
        if rc != 0:
            raise AssertionError("server exited with %d after SIGTERM, want 0" % rc)

    def setUp(self):
        rc = self.proc.poll()
        self.assertIsNone(rc, "echo server died before this test (exit status %s)" % rc)

    def tearDown(self):
        rc = self.proc.poll()
        self.assertIsNone(rc, "echo server died during this test (exit status %s)" % rc)

    def assert_code(self, ctx, code):
        err = ctx.exception
        self.assertEqual(err.code(), code, "got %s: %r" % (err.code(), err.details()))

    def check_unary_works(self, channel=None):
        call = self.unary if channel is None else channel.unary_unary(
            UNARY, request_serializer=EchoRequest.SerializeToString,
            response_deserializer=EchoReply.FromString)
        reply = call(EchoRequest(text="still ok", seq=77), timeout=CALL_TIMEOUT_S)
        self.assertEqual(reply.text, "still ok")
        self.assertEqual(reply.seq, 77)

    # 1
    def test_01_unary_echo_metadata_trailer(self):
        md = (("traceparent", TRACEPARENT), ("authorization", "Bearer t"))
        reply, call = self.unary.with_call(
            EchoRequest(text="hello, llmserve", seq=42), metadata=md, timeout=CALL_TIMEOUT_S)
        self.assertEqual(reply.text, "hello, llmserve")
        self.assertEqual(reply.seq, 42)
        self.assertEqual(reply.index, 0)
        self.assertEqual(reply.payload, b"")
        self.assertEqual(reply.metadata,
                         "traceparent=%s;authorization=Bearer t;" % TRACEPARENT)
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        trailers = {m.key: m.value for m in call.trailing_metadata()}
        self.assertEqual(trailers.get("x-echo-trailer"), "done", trailers)

        # No metadata sent: none echoed; payload_bytes fills the payload.
        reply = self.unary(EchoRequest(text="plain", payload_bytes=1000), timeout=CALL_TIMEOUT_S)
        self.assertEqual(reply.metadata, "")
        self.assertEqual(reply.payload, b"x" * 1000)

    # 2
    def test_02_bidi_stream_2000_in_order(self):
        n = 2000

        def requests():
            for i in range(n):
                yield EchoRequest(text="m%d" % i, seq=i)

        it = self.stream(requests(), timeout=30)
        seqs = []
        for reply in it:
            self.assertEqual(reply.text, "m%d" % reply.seq)
            self.assertEqual(reply.index, 0)
            seqs.append(reply.seq)
        self.assertEqual(len(seqs), n)
        self.assertEqual(seqs, list(range(n)))
        self.assertEqual(it.code(), grpc.StatusCode.OK, it.details())
        trailers = {m.key: m.value for m in it.trailing_metadata()}
        self.assertEqual(trailers.get("x-echo-trailer"), "done", trailers)

    # 3
    def test_03_stream_repeat_50(self):
        it = self.stream(iter([EchoRequest(text="r", seq=5, repeat=50)]),
                         timeout=CALL_TIMEOUT_S)
        replies = list(it)
        self.assertEqual([r.index for r in replies], list(range(50)))
        self.assertTrue(all(r.text == "r" and r.seq == 5 for r in replies))
        self.assertEqual(it.code(), grpc.StatusCode.OK, it.details())

    # 4
    def test_04_deadline(self):
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as ctx:
            self.unary(EchoRequest(text="slow", sleep_ms=1000), timeout=0.2)
        elapsed = time.monotonic() - t0
        self.assert_code(ctx, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(elapsed, 1.0, "deadline took %.3f s to fire" % elapsed)

        # The client sends its deadline as a grpc-timeout header, which gRPC rounds
        # *up* to the header's unit: 10 ms for timeouts from 1 s to 10 s.  So the
        # server may see up to 10 ms more than 5 s; more than that would be a bug.
        reply = self.unary(EchoRequest(text="deadline"), timeout=5)
        self.assertGreater(reply.remaining_us, 0)
        self.assertGreater(reply.remaining_us, 4_000_000, "deadline lost on the way")
        self.assertLessEqual(reply.remaining_us, 5_000_000 + 10_000)

        # No deadline at all reads as -1.
        reply = self.unary(EchoRequest(text="no deadline"))
        self.assertEqual(reply.remaining_us, -1)

    # 5
    def test_05_cancel_stream(self):
        it = self.stream(iter([EchoRequest(text="c", repeat=100000, interval_us=1000)]),
                         timeout=30)
        for i in range(5):
            reply = next(it)
            self.assertEqual(reply.index, i)
            self.assertEqual(reply.text, "c")
        self.assertTrue(it.cancel())
        self.assertEqual(it.code(), grpc.StatusCode.CANCELLED)
        with self.assertRaises(grpc.RpcError) as ctx:
            for _ in it:
                pass
        self.assert_code(ctx, grpc.StatusCode.CANCELLED)
        self.check_unary_works()

    # 6
    def test_06_undecodable_request(self):
        raw = self.channel.unary_unary(UNARY, request_serializer=lambda b: b,
                                       response_deserializer=EchoReply.FromString)
        with self.assertRaises(grpc.RpcError) as ctx:
            raw(b"\xff\xff\xff\xff\x0f", timeout=CALL_TIMEOUT_S)
        self.assert_code(ctx, grpc.StatusCode.INVALID_ARGUMENT)
        self.check_unary_works()

    # 7
    def test_07_fail_code(self):
        with self.assertRaises(grpc.RpcError) as ctx:
            self.unary(EchoRequest(text="f", fail_code=9), timeout=CALL_TIMEOUT_S)
        self.assert_code(ctx, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(ctx.exception.details(), "failure requested")

    # 8
    def test_08_unknown_method(self):
        nope = self.channel.unary_unary(
            "/llmserve.test.Echo/Nope", request_serializer=EchoRequest.SerializeToString,
            response_deserializer=EchoReply.FromString)
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as ctx:
            nope(EchoRequest(text="?"), timeout=CALL_TIMEOUT_S)
        self.assert_code(ctx, grpc.StatusCode.UNIMPLEMENTED)
        self.assertLess(time.monotonic() - t0, 2.0, "UNIMPLEMENTED should come at once")
        self.check_unary_works()

    # 9
    def test_09_health(self):
        self.assertEqual(self.health_check("", timeout=CALL_TIMEOUT_S), SERVING)
        self.assertEqual(self.health_check("llmserve.test.Echo", timeout=CALL_TIMEOUT_S),
                         SERVING)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.health_check("nope", timeout=CALL_TIMEOUT_S)
        self.assert_code(ctx, grpc.StatusCode.NOT_FOUND)

        watch = self.health_watch("", timeout=CALL_TIMEOUT_S)
        try:
            self.assertEqual(next(watch), SERVING)
        finally:
            watch.cancel()
        self.assertEqual(watch.code(), grpc.StatusCode.CANCELLED)

    # 10
    def test_10_concurrency(self):
        threads_n, calls_n = 32, 50
        errors = []
        done = [0] * threads_n
        barrier = threading.Barrier(threads_n)

        def worker(t):
            try:
                barrier.wait(CALL_TIMEOUT_S)
                for j in range(calls_n):
                    seq = t * 1000 + j
                    reply = self.unary(EchoRequest(text="t%d" % t, seq=seq),
                                       timeout=CALL_TIMEOUT_S)
                    if reply.text != "t%d" % t or reply.seq != seq:
                        errors.append("thread %d call %d: got %r/%d" % (t, j, reply.text,
                                                                        reply.seq))
                        return
                    done[t] += 1
            except Exception as e:  # grpc.RpcError or a barrier timeout
                errors.append("thread %d: %r" % (t, e))

        workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        self.assertFalse(any(w.is_alive() for w in workers), "worker threads hung")
        self.assertEqual(errors, [])
        self.assertEqual(sum(done), threads_n * calls_n)


def _watchdog():
    """Ends a hung run with a clear message instead of waiting for ctest's timeout."""
    sys.stderr.write("test_echo.py: watchdog: no result after %.0f s, giving up\n" % WATCHDOG_S)
    import faulthandler
    faulthandler.dump_traceback(all_threads=True)
    proc = EchoServerTest.proc
    if proc is not None and proc.poll() is None:
        proc.kill()
    os._exit(1)


if __name__ == "__main__":
    timer = threading.Timer(WATCHDOG_S, _watchdog)
    timer.daemon = True
    timer.start()
    unittest.main(verbosity=2)
