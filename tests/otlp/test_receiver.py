#!/usr/bin/python3
"""Tests of the stand-in OTLP/HTTP trace receiver (tests/otlp/receiver.py) itself, over HTTP
against the running script: a request modelled on opentelemetry-proto's examples/trace.json
accepted and rebuilt; each rejection rule, alone in a partial success and as a 400 when no
span survives; the envelope's 400s with a google.rpc.Status body; 415 for other content
types; gzip; size limits; --strict; the fail and delay controls; a trace across three
services rebuilt as one tree; SIGTERM and SIGINT exiting 0.

Run through ctest (tests/otlp.cmake); needs nothing built.
"""
import base64
import copy
import gzip
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import procs  # noqa: E402  (tests/python)

RECEIVER = os.path.join(HERE, "receiver.py")
SMALL_LIMIT = 4096  # --max-body-bytes of the strict receiver
T0 = 1544712660000000000  # examples/trace.json's start time


def new_id(nbytes):
    return os.urandom(nbytes).hex()


class Receiver:
    """An HTTP client of one receiver; a new connection per request."""

    def __init__(self, port):
        self.port = port

    def call(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            return resp.status, hdrs, raw
        finally:
            conn.close()

    def export(self, doc, ctype="application/json", headers=None, raw=None, gz=False):
        """POSTs doc (or raw bytes) to /v1/traces; returns (status, headers, parsed body)."""
        body = raw if raw is not None else json.dumps(doc).encode()
        h = {"Content-Type": ctype} if ctype is not None else {}
        if gz:
            body = gzip.compress(body)
            h["Content-Encoding"] = "gzip"
        h.update(headers or {})
        status, hdrs, data = self.call("POST", "/v1/traces", body, h)
        if hdrs.get("content-type") != "application/json":
            raise AssertionError("answer %d has Content-Type %r" % (status, hdrs.get("content-type")))
        return status, hdrs, json.loads(data)

    def get(self, path, want=200):
        status, _, data = self.call("GET", path)
        if status != want:
            raise AssertionError("GET %s: %d %r, want %d" % (path, status, data, want))
        return json.loads(data)

    def put(self, path, want=200):
        status, _, data = self.call("PUT", path)
        if status != want:
            raise AssertionError("PUT %s: %d %r, want %d" % (path, status, data, want))
        return json.loads(data)

    def clear(self):
        status, _, _ = self.call("DELETE", "/_receiver/traces")
        assert status == 200


def attr(key, value):
    """A KeyValue as the OTLP JSON encoding writes it."""
    return {"key": key, "value": any_value(value)}


def any_value(v):
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, bytes):
        return {"bytesValue": base64.b64encode(v).decode()}
    if isinstance(v, list):
        return {"arrayValue": {"values": [any_value(x) for x in v]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": [attr(k, x) for k, x in v.items()]}}
    return {"stringValue": v}


def span(trace_id, span_id, name="op", parent="", kind=1, start=T0, dur=1000, **extra):
    s = {"traceId": trace_id, "spanId": span_id, "name": name, "kind": kind,
         "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + dur)}
    if parent:
        s["parentSpanId"] = parent
    s.update(extra)
    return s


def request(*resources):
    """resources: (service name, [span, ...]) pairs, one scope each."""
    return {"resourceSpans": [
        {"resource": {"attributes": [attr("service.name", svc)]},
         "scopeSpans": [{"scope": {"name": "llmserve", "version": "0.1.0"}, "spans": spans}]}
        for svc, spans in resources]}


class ReceiverTest(unittest.TestCase):
    processes = []

    @classmethod
    def setUpClass(cls):
        try:
            cls.r = Receiver(procs.start([RECEIVER], cls.processes, timeout=20))
            cls.strict = Receiver(procs.start(
                [RECEIVER, "--strict", "--max-body-bytes", str(SMALL_LIMIT)], cls.processes,
                timeout=20))
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        procs.stop_suite(cls)  # every receiver must exit 0 on SIGTERM

    def setUp(self):
        for p in self.processes:
            self.assertIsNone(p.poll(), "a receiver exited (status %s)" % p.poll())
        self.r.clear()
        self.strict.clear()

    def assert_status_body(self, body, code):
        self.assertEqual(body["code"], code, body)
        self.assertIsInstance(body["message"], str)
        self.assertTrue(body["message"], body)

    def partial(self, bad, receiver=None, field=None, words=None):
        """On a cleared receiver, sends bad after a good span; asserts that bad alone was
        rejected (a partial success naming field and words); returns the errorMessage."""
        rcv = receiver or self.r
        rcv.clear()
        good = span(new_id(16), new_id(8), "good")
        status, _, body = rcv.export(request(("svc", [good, bad])))
        self.assertEqual(status, 200, body)
        ps = body.get("partialSuccess")
        self.assertIsNotNone(ps, "%s was accepted: %s" % (json.dumps(bad), body))
        self.assertEqual(ps["rejectedSpans"], "1", body)  # int64: a string
        msg = ps["errorMessage"]
        if field:
            self.assertIn("resourceSpans[0].scopeSpans[0].spans[1]." + field, msg)
        for w in words or []:
            self.assertIn(w, msg)
        traces = rcv.get("/_receiver/traces")
        stored = [s for sp in traces.values() for s in sp]
        self.assertEqual([s["name"] for s in stored], ["good"], "the bad span was stored")
        rejected = rcv.get("/_receiver/rejected")
        self.assertEqual(len(rejected), 1)
        if field:
            self.assertTrue(rejected[0]["field"].endswith(field), rejected)
        stats = rcv.get("/_receiver/stats")
        self.assertEqual((stats["spans_accepted"], stats["spans_rejected"]), (1, 1))
        return msg

    # ---- the example -------------------------------------------------------------------

    def test_01_example_accepted_and_rebuilt(self):
        # examples/trace.json's span (upper-case hex, as the spec's example writes it), its
        # parent, and a child of it carrying every AnyValue type, an event and a status.
        tid = "5B8EFFF798038103D269B633813FC60C"
        doc = {"resourceSpans": [{
            "resource": {"attributes": [attr("service.name", "my.service")]},
            "scopeSpans": [{
                "scope": {"name": "my.library", "version": "1.0.0",
                          "attributes": [attr("my.scope.attribute", "some scope attribute")]},
                "spans": [
                    {"traceId": tid, "spanId": "EEE19B7EC3C1B174",
                     "parentSpanId": "EEE19B7EC3C1B173", "name": "I'm a server span",
                     "startTimeUnixNano": "1544712660000000000",
                     "endTimeUnixNano": "1544712661000000000", "kind": 2,
                     "attributes": [attr("my.span.attr", "some value")]},
                    {"traceId": tid, "spanId": "eee19b7ec3c1b175",
                     "parentSpanId": "eee19b7ec3c1b174", "name": "child",
                     "startTimeUnixNano": "1544712660500000000",
                     "endTimeUnixNano": "1544712660600000000", "kind": 3,
                     "attributes": [attr("s", "x"), attr("b", True), attr("i", -42),
                                    attr("d", 0.5), attr("a", ["p", 7]),
                                    attr("kv", {"inner": "v", "n": 3}), attr("raw", b"\x00\xff"),
                                    {"key": "empty", "value": {}}],
                     "events": [{"timeUnixNano": "1544712660550000000", "name": "retry",
                                 "attributes": [attr("attempt", 2)]}],
                     "status": {"code": 2, "message": "deadline exceeded"},
                     "futureField": {"ignored": True}},
                ]}]}]}
        # The parent arrives in a second export, from the same resource.
        parent = copy.deepcopy(doc)
        parent["resourceSpans"][0]["scopeSpans"][0]["spans"] = [
            {"traceId": tid.lower(), "spanId": "eee19b7ec3c1b173", "name": "root",
             "startTimeUnixNano": "1544712659000000000",
             "endTimeUnixNano": "1544712662000000000", "kind": 2}]
        for d in (doc, parent):
            status, hdrs, body = self.r.export(d)
            self.assertEqual((status, body), (200, {}))

        traces = self.r.get("/_receiver/traces")
        self.assertEqual(list(traces), [tid.lower()])  # stored in lower case
        spans = traces[tid.lower()]
        self.assertEqual([s["spanId"] for s in spans],  # ordered by start
                         ["eee19b7ec3c1b173", "eee19b7ec3c1b174", "eee19b7ec3c1b175"])
        root, server, child = spans
        self.assertEqual(root["parentSpanId"], "")
        self.assertEqual((server["parentSpanId"], server["name"], server["kind"]),
                         ("eee19b7ec3c1b173", "I'm a server span", 2))
        self.assertEqual((server["start"], server["end"]),
                         (1544712660000000000, 1544712661000000000))
        for s in spans:
            self.assertEqual(s["service"], "my.service")
            self.assertEqual(s["scope"], {"name": "my.library", "version": "1.0.0"})
        self.assertEqual(server["attributes"], {"my.span.attr": "some value"})
        self.assertEqual(child["attributes"], {
            "s": "x", "b": True, "i": -42, "d": 0.5, "a": ["p", 7],
            "kv": {"inner": "v", "n": 3}, "raw": "AP8=", "empty": None})
        self.assertEqual(child["events"], [{"name": "retry", "time": 1544712660550000000,
                                            "attributes": {"attempt": 2}}])
        self.assertEqual(child["status"], {"code": 2, "message": "deadline exceeded"})

        tree = self.r.get("/_receiver/trace/" + tid)  # any case in the URL
        self.assertEqual((tree["spanCount"], tree["services"], tree["orphans"], tree["cycles"]),
                         (3, ["my.service"], [], []))
        self.assertEqual(len(tree["roots"]), 1)
        top = tree["roots"][0]
        self.assertEqual(top["spanId"], "eee19b7ec3c1b173")
        self.assertEqual([c["spanId"] for c in top["children"]], ["eee19b7ec3c1b174"])
        self.assertEqual([c["spanId"] for c in top["children"][0]["children"]],
                         ["eee19b7ec3c1b175"])
        self.r.get("/_receiver/trace/" + new_id(16), want=404)

        stats = self.r.get("/_receiver/stats")
        self.assertEqual((stats["requests"], stats["spans_accepted"], stats["spans_rejected"],
                          stats["traces"], stats["responses"]), (2, 3, 0, 1, {"200": 2}))
        # traceId twice, spanId and parentSpanId of the example's span
        self.assertEqual(stats["lenient"]["hexUpperCase"], 4)
        self.assertEqual(stats["lenient"]["unknownFields"], 1)  # futureField
        self.assertGreater(stats["bytes_received"], 0)

    def test_02_empty_requests_succeed(self):
        for doc in ({}, {"resourceSpans": []}, {"resourceSpans": None},
                    {"resourceSpans": [{"scopeSpans": [{"spans": []}]}]}):
            self.assertEqual(self.r.export(doc)[::2], (200, {}), doc)

    # ---- rejections, one span at a time ------------------------------------------------

    def test_03_id_rules(self):
        t, s = new_id(16), new_id(8)
        cases = [
            ("traceId", "zz" + t[2:], ["32 hex digits"]),
            ("traceId", t[:31], ["32 hex digits"]),
            ("traceId", t + "00", ["32 hex digits"]),
            ("traceId", "W47/95gDgQPSabYzgT/GDA==", ["base64"]),  # 16 bytes as proto3 JSON
            ("traceId", "W47_95gDgQPSabYzgT_GDA", ["base64"]),   # unpadded, URL-safe
            ("traceId", "0" * 32, ["all-zero"]),
            ("traceId", "", ["missing"]),
            ("traceId", None, ["missing"]),
            ("traceId", 12, ["hex string"]),
            ("spanId", s[:15], ["16 hex digits"]),
            ("spanId", "7uGbfsPBsXQ=", ["base64"]),  # 8 bytes as proto3 JSON
            ("spanId", "0" * 16, ["all-zero"]),
            ("spanId", "", ["missing"]),
            ("parentSpanId", s[:8], ["16 hex digits"]),
            ("parentSpanId", "g" * 16, ["16 hex digits"]),
        ]
        for field, value, words in cases:
            with self.subTest(field=field, value=value):
                bad = span(t, new_id(8), "bad")
                bad[field] = value
                if value is None:
                    del bad[field]
                self.partial(bad, field=field, words=words)

        # Hex is case-insensitive in OTLP/JSON: upper case is accepted and stored lower;
        # --strict refuses it.  An all-zero parent is a root (--strict: refused).
        up = span(t.upper(), s.upper(), "upper", parent="0" * 16)
        self.assertEqual(self.r.export(request(("svc", [up])))[::2], (200, {}))
        got = self.r.get("/_receiver/traces")[t][0]
        self.assertEqual((got["traceId"], got["spanId"], got["parentSpanId"]), (t, s, ""))
        self.assertEqual(self.r.get("/_receiver/stats")["lenient"]["zeroParentSpanId"], 1)
        self.partial(span(t.upper(), new_id(8), "bad"), self.strict, "traceId", ["upper-case"])
        self.partial(span(t, new_id(8), "bad", parent="0" * 16), self.strict, "parentSpanId",
                     ["all-zero"])

    def test_04_integer_rules(self):
        t = new_id(16)
        # 64-bit integers: decimal strings; JSON integers accepted (counted) unless --strict.
        as_number = span(t, new_id(8), "numbers")
        as_number["startTimeUnixNano"], as_number["endTimeUnixNano"] = T0, T0 + 5
        as_number["attributes"] = [{"key": "n", "value": {"intValue": 7}}]
        self.assertEqual(self.r.export(request(("svc", [as_number])))[::2], (200, {}))
        got = self.r.get("/_receiver/traces")[t][0]
        self.assertEqual((got["start"], got["end"], got["attributes"]), (T0, T0 + 5, {"n": 7}))
        self.assertEqual(self.r.get("/_receiver/stats")["lenient"]["int64AsNumber"], 3)
        self.partial(as_number, self.strict, "startTimeUnixNano", ["decimal string"])

        cases = [
            ("startTimeUnixNano", 1.5e18, ["fraction or exponent"]),
            ("startTimeUnixNano", "1.5e18", ["decimal integer string"]),
            ("startTimeUnixNano", True, ["a boolean"]),
            ("startTimeUnixNano", "-5", ["out of range"]),
            ("startTimeUnixNano", str(2**64), ["out of range"]),
            ("endTimeUnixNano", " 12", ["decimal integer string"]),
            ("endTimeUnixNano", str(T0 - 1), ["before start"]),
            ("startTimeUnixNano", "0", ["missing"]),
            ("flags", -1, ["out of range"]),
        ]
        for field, value, words in cases:
            with self.subTest(field=field, value=value):
                bad = span(t, new_id(8), "bad")
                bad[field] = value
                self.partial(bad, field=field, words=words)
        for value, words in [(5.5, ["fraction"]), ("abc", ["decimal"]), (str(2**63), ["range"]),
                             ({"v": 1}, ["an object"])]:
            with self.subTest(intValue=value):
                bad = span(t, new_id(8), "bad", attributes=[
                    {"key": "n", "value": {"intValue": value}}])
                self.partial(bad, field="attributes[0].value.intValue", words=words)

    def test_05_enum_name_and_status_rules(self):
        t = new_id(16)
        cases = [
            ("kind", "SPAN_KIND_SERVER", "kind", ["MUST be integers"]),
            ("kind", "2", "kind", ["MUST be integers"]),
            ("kind", 6, "kind", ["not a value"]),
            ("kind", 2.0, "kind", ["integer enum"]),
            ("status", {"code": "STATUS_CODE_ERROR"}, "status.code", ["MUST be integers"]),
            ("status", {"code": 3}, "status.code", ["not a value"]),
            ("status", {"code": 2, "message": 5}, "status.message", ["want a string"]),
            ("name", "", "name", ["name is required"]),
            ("name", None, "name", ["name is required"]),
            ("name", ["x"], "name", ["want a string"]),
            ("events", [{"timeUnixNano": str(T0)}], "events[0].name", ["required"]),
            ("events", [{"name": "e"}], "events[0].timeUnixNano", ["time"]),
            ("events", {"name": "e"}, "events", ["want an array"]),
        ]
        for key, value, field, words in cases:
            with self.subTest(key=key, value=value):
                bad = span(t, new_id(8), "bad")
                bad[key] = value
                if value is None:
                    del bad[key]
                self.partial(bad, field=field, words=words)

    def test_06_attribute_rules(self):
        t = new_id(16)
        cases = [
            ({"key": "x", "value": {"stringValue": "a", "intValue": "1"}}, "attributes[0].value",
             ["intValue and stringValue", "oneof"]),
            ({"key": "x", "value": {"boolValue": "true"}}, "attributes[0].value.boolValue",
             ["true or false"]),
            ({"key": "x", "value": {"stringValue": 1}}, "attributes[0].value.stringValue",
             ["want a string"]),
            ({"key": "x", "value": {"doubleValue": "fast"}}, "attributes[0].value.doubleValue",
             ["number"]),
            ({"key": "x", "value": {"doubleValue": 10**400}}, "attributes[0].value.doubleValue",
             ["out of range"]),
            ({"key": "x", "value": {"doubleValue": "1e999"}}, "attributes[0].value.doubleValue",
             ["out of range"]),
            ({"key": "x", "value": {"bytesValue": "not base64!"}},
             "attributes[0].value.bytesValue", ["base64"]),
            ({"key": "x", "value": {"arrayValue": {"values": [{"stringValue": "a",
                                                               "boolValue": True}]}}},
             "attributes[0].value.arrayValue.values[0]", ["oneof"]),
            ({"key": "", "value": {"stringValue": "a"}}, "attributes[0].key", ["empty"]),
            ({"value": {"stringValue": "a"}}, "attributes[0].key", ["empty"]),
            ("x=1", "attributes[0]", ["want an object"]),
        ]
        for kv, field, words in cases:
            with self.subTest(kv=kv):
                self.partial(span(t, new_id(8), "bad", attributes=[kv]), field=field, words=words)
        dup = [attr("k", "a"), attr("k", "b")]
        self.partial(span(t, new_id(8), "bad", attributes=dup), field="attributes[1].key",
                     words=["duplicate"])
        deep = {"stringValue": "leaf"}
        for _ in range(40):
            deep = {"arrayValue": {"values": [deep]}}
        self.partial(span(t, new_id(8), "bad", attributes=[{"key": "deep", "value": deep}]),
                     words=["nested deeper"])
        # Doubles: numbers or numeric strings, and the three special names.
        ok = span(t, new_id(8), "doubles", attributes=[
            {"key": "a", "value": {"doubleValue": 1}}, {"key": "b", "value": {"doubleValue": "2.5"}},
            {"key": "c", "value": {"doubleValue": "NaN"}}])
        self.assertEqual(self.r.export(request(("svc", [ok])))[::2], (200, {}))
        self.assertEqual(self.r.get("/_receiver/traces")[t][0]["attributes"],
                         {"a": 1.0, "b": 2.5, "c": "NaN"})

    def test_07_field_names(self):
        # Original proto names are not valid keys: ignored as unknown fields, so a span
        # that names its id only trace_id has none; --strict names the mistake.
        t = new_id(16)
        bad = span(t, new_id(8), "bad")
        bad["trace_id"] = bad.pop("traceId")
        status, _, body = self.r.export(request(("svc", [bad, span(t, new_id(8), "good")])))
        self.assertEqual(status, 200)
        self.assertIn("spans[0].traceId: missing", body["partialSuccess"]["errorMessage"])
        lenient = self.r.get("/_receiver/stats")["lenient"]
        self.assertEqual((lenient["protoFieldNames"], lenient["unknownFields"]), (1, 1))
        self.r.clear()
        snake = span(t, new_id(8), "bad", parent_span_id=new_id(8))
        self.partial(snake, self.strict, "parent_span_id", ["lowerCamelCase", "parentSpanId"])
        # Without --strict, parent_span_id is ignored: the span becomes a root.
        self.assertEqual(self.r.export(request(("svc", [snake])))[::2], (200, {}))
        self.assertEqual(self.r.get("/_receiver/traces")[t][0]["parentSpanId"], "")

    # ---- whole-request answers ---------------------------------------------------------

    def test_08_all_rejected_is_400_with_bad_request(self):
        t = new_id(16)
        bad1 = span(t, new_id(8), "one", kind="SPAN_KIND_CLIENT")
        bad2 = span(t, "0" * 16, "two")
        status, hdrs, body = self.r.export(request(("svc", [bad1, bad2])))
        self.assertEqual(status, 400)
        self.assert_status_body(body, 3)
        self.assertIn("every span was rejected (2)", body["message"])
        (detail,) = body["details"]
        self.assertEqual(detail["@type"], "type.googleapis.com/google.rpc.BadRequest")
        self.assertEqual([v["field"] for v in detail["fieldViolations"]],
                         ["resourceSpans[0].scopeSpans[0].spans[0].kind",
                          "resourceSpans[0].scopeSpans[0].spans[1].spanId"])
        stats = self.r.get("/_receiver/stats")
        self.assertEqual((stats["spans_rejected"], stats["responses_4xx"], stats["responses"]),
                         (2, 1, {"400": 1}))
        self.assertEqual(self.r.get("/_receiver/traces"), {})

    def test_09_envelope_errors_are_400(self):
        good = request(("svc", [span(new_id(16), new_id(8))]))
        bodies = [
            (b"not json", "not JSON"),
            (b"\xff\xfe{}", "not UTF-8"),
            (b'{"resourceSpans": [], "resourceSpans": []}', "duplicate key"),
            (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"x": NaN}]}]}]}', "NaN"),
            (b"[]", "want an object"),
            (b'"resourceSpans"', "want an object"),
            (b'{"resourceSpans": {}}', "resourceSpans: want an array"),
            (b'{"resourceSpans": [1]}', "resourceSpans[0]: want an object"),
            (b'{"resourceSpans": [{"scopeSpans": {}}]}', "scopeSpans: want an array"),
            (b'{"resourceSpans": [{"scopeSpans": [{"spans": ["s"]}]}]}',
             "spans[0]: want an object"),
            (json.dumps(good).encode()[:-3], "not JSON"),
        ]
        for raw, words in bodies:
            with self.subTest(raw=raw):
                status, _, body = self.r.export(None, raw=raw)
                self.assertEqual(status, 400, body)
                self.assert_status_body(body, 3)
                self.assertIn(words, body["message"])
        self.assertEqual(self.r.get("/_receiver/traces"), {})
        self.assertEqual(self.r.get("/_receiver/stats")["responses_4xx"], len(bodies))

    def test_10_content_types(self):
        doc = request(("svc", [span(new_id(16), new_id(8))]))
        for ctype in ("application/x-protobuf", "text/plain", "application/json-seq",
                      "application/json; charset=latin1", None):
            with self.subTest(ctype=ctype):
                status, _, body = self.r.export(doc, ctype=ctype)
                self.assertEqual(status, 415, body)
                self.assert_status_body(body, 3)
        for ctype in ("application/json; charset=utf-8", "Application/JSON; charset=\"UTF-8\""):
            self.assertEqual(self.r.export(doc, ctype=ctype)[::2], (200, {}), ctype)
        status, hdrs, _ = self.r.call("GET", "/v1/traces")
        self.assertEqual((status, hdrs.get("allow")), (405, "POST"))
        self.assertEqual(self.r.call("POST", "/v1/metrics", b"{}",
                                     {"Content-Type": "application/json"})[0], 404)
        stats = self.r.get("/_receiver/stats")
        self.assertEqual((stats["spans_accepted"], stats["responses_4xx"]), (2, 6))

    def test_11_gzip_and_limits(self):
        t = new_id(16)
        doc = request(("svc", [span(t, new_id(8), "zipped")]))
        self.assertEqual(self.r.export(doc, gz=True)[::2], (200, {}))
        self.assertEqual(self.r.get("/_receiver/traces")[t][0]["name"], "zipped")
        raw = json.dumps(doc).encode()
        stats = self.r.get("/_receiver/stats")
        self.assertEqual((stats["gzip_requests"], stats["bytes_decoded"]), (1, len(raw)))
        self.assertEqual(stats["bytes_received"], len(gzip.compress(raw)))
        status, _, body = self.r.export(None, raw=raw, headers={"Content-Encoding": "gzip"})
        self.assertEqual((status, body["code"]), (400, 3))  # not a gzip stream
        status, _, body = self.r.export(None, raw=gzip.compress(raw)[:-8],
                                        headers={"Content-Encoding": "gzip"})
        self.assertEqual(status, 400, body)  # truncated
        status, _, _ = self.r.export(doc, headers={"Content-Encoding": "br"})
        self.assertEqual(status, 415)
        # The strict receiver's limit (4096 bytes): as sent, and after decompression.
        big = request(("svc", [span(t, new_id(8), "x" * SMALL_LIMIT)]))
        status, hdrs, body = self.strict.export(big)
        self.assertEqual((status, body["code"]), (413, 8))
        status, _, body = self.strict.export(big, gz=True)
        self.assertEqual(status, 413, body)
        self.assertIn("after decompression", body["message"])
        self.assertEqual(self.strict.export(doc, gz=True)[::2], (200, {}))

    def test_12_partial_success_accounting(self):
        t = new_id(16)
        doc = request(
            ("a", [span(t, new_id(8), "a1"), span(t, new_id(8), "a2", kind=9)]),
            ("b", [span(t, new_id(8), "b1"), span(t, new_id(8), "b2")]),
            ("c", [span(t, new_id(8), "c1"), span(t, new_id(8), "")]))
        # A bad resource attribute rejects every span of that resource.
        doc["resourceSpans"][1]["resource"]["attributes"].append({"key": "x", "value": 3})
        # A bad scope, every span of that scope.
        doc["resourceSpans"].append({"resource": {}, "scopeSpans": [
            {"scope": {"name": 5}, "spans": [span(t, new_id(8), "d1")]},
            {"scope": {"name": "ok"}, "spans": [span(t, new_id(8), "e1")]}]})
        status, _, body = self.r.export(doc)
        self.assertEqual(status, 200, body)
        ps = body["partialSuccess"]
        self.assertEqual(ps["rejectedSpans"], "5")
        msg = ps["errorMessage"]
        self.assertTrue(msg.startswith("rejected 5 of 8 spans: "), msg)
        for field in ("resourceSpans[0].scopeSpans[0].spans[1].kind",
                      "resourceSpans[1].resource.attributes[1].value",
                      "resourceSpans[2].scopeSpans[0].spans[1].name",
                      "resourceSpans[3].scopeSpans[0].scope.name"):
            self.assertIn(field, msg)
        names = sorted(s["name"] for s in self.r.get("/_receiver/traces")[t])
        self.assertEqual(names, ["a1", "c1", "e1"])
        e1 = [s for s in self.r.get("/_receiver/traces")[t] if s["name"] == "e1"][0]
        self.assertIsNone(e1["service"])  # a resource without service.name
        self.assertEqual(len(self.r.get("/_receiver/rejected")), 5)
        stats = self.r.get("/_receiver/stats")
        self.assertEqual((stats["requests"], stats["spans_accepted"], stats["spans_rejected"],
                          stats["responses"]), (1, 3, 5, {"200": 1}))

    # ---- the controls ------------------------------------------------------------------

    def test_13_fail_control(self):
        t = new_id(16)
        doc = request(("svc", [span(t, new_id(8))]))
        self.r.put("/_receiver/fail?status=503&count=2&retry_after=3")
        for _ in range(2):
            status, hdrs, body = self.r.export(doc)
            self.assertEqual((status, hdrs.get("retry-after")), (503, "3"))
            self.assert_status_body(body, 14)
        self.assertEqual(self.r.export(doc)[::2], (200, {}))
        self.r.put("/_receiver/fail?status=429&count=1")
        status, hdrs, body = self.r.export(doc)
        self.assertEqual((status, "retry-after" in hdrs, body["code"]), (429, False, 8))
        self.assertEqual(len(self.r.get("/_receiver/traces")[t]), 1)  # failed ones dropped
        stats = self.r.get("/_receiver/stats")
        self.assertEqual((stats["failures_injected"], stats["responses_5xx"],
                          stats["responses_4xx"], stats["responses"]),
                         (3, 2, 1, {"503": 2, "200": 1, "429": 1}))
        for bad in ("status=200&count=1", "status=503", "status=503&count=-1", "count=1"):
            self.r.put("/_receiver/fail?" + bad, want=400)
        self.r.put("/_receiver/nothing", want=404)
        # DELETE forgets everything, the controls included.
        self.r.put("/_receiver/fail?status=500&count=5")
        self.r.clear()
        self.assertEqual(self.r.export(doc)[::2], (200, {}))
        stats = self.r.get("/_receiver/stats")
        self.assertEqual((stats["requests"], stats["traces"], stats["failures_injected"]),
                         (1, 1, 0))

    def test_14_delay_control(self):
        doc = request(("svc", [span(new_id(16), new_id(8))]))
        self.r.put("/_receiver/delay?ms=400")
        took = []

        def timed_export():
            start = time.monotonic()
            took.append((self.r.export(doc)[0], time.monotonic() - start))

        th = threading.Thread(target=timed_export)
        th.start()
        time.sleep(0.05)
        # A delayed answer holds up neither other requests nor the controls.
        start = time.monotonic()
        self.assertEqual(self.r.get("/_receiver/stats")["requests"], 1)
        self.assertLess(time.monotonic() - start, 0.3)
        th.join(10)
        (status, seconds), = took
        self.assertEqual(status, 200)
        self.assertGreaterEqual(seconds, 0.4)
        self.r.put("/_receiver/delay?ms=0")
        start = time.monotonic()
        self.assertEqual(self.r.export(doc)[0], 200)
        self.assertLess(time.monotonic() - start, 0.3)
        self.r.put("/_receiver/delay?ms=x", want=400)

    # ---- a trace across services -------------------------------------------------------

    def test_15_three_services_one_tree(self):
        # router (server, then client) -> inference (server, then client) -> cache
        # (server), each service exporting its own spans; they arrive leaf first, and a
        # span whose parent has not arrived is an orphan until it does.
        t = new_id(16)
        ids = {n: new_id(8) for n in ("rs", "rc", "is", "ic", "cs", "is2")}
        router = [span(t, ids["rs"], "llmserve.v1.Router/Generate", kind=2, start=T0,
                       dur=10**6),
                  span(t, ids["rc"], "llmserve.v1.Inference/Generate", parent=ids["rs"], kind=3,
                       start=T0 + 10, dur=9 * 10**5)]
        inference = [span(t, ids["is"], "llmserve.v1.Inference/Generate", parent=ids["rc"],
                          kind=2, start=T0 + 20, dur=8 * 10**5),
                     span(t, ids["ic"], "llmserve.v1.Cache/Get", parent=ids["is"], kind=3,
                          start=T0 + 30, dur=100),
                     span(t, ids["is2"], "decode", parent=ids["is"], kind=1, start=T0 + 25,
                          dur=500)]
        cache = [span(t, ids["cs"], "llmserve.v1.Cache/Get", parent=ids["ic"], kind=2,
                      start=T0 + 40, dur=50, attributes=[attr("rpc.system", "grpc")])]
        self.assertEqual(self.r.export(request(("llmserve-cache", cache)))[::2], (200, {}))
        tree = self.r.get("/_receiver/trace/" + t)
        self.assertEqual(([o["spanId"] for o in tree["orphans"]], tree["roots"]),
                         ([ids["cs"]], []))
        self.assertEqual(self.r.export(request(("llmserve-inference", inference),
                                               ("llmserve-router", router)))[::2], (200, {}))
        tree = self.r.get("/_receiver/trace/" + t)
        self.assertEqual((tree["spanCount"], tree["orphans"], tree["cycles"]), (6, [], []))
        self.assertEqual(tree["services"],
                         ["llmserve-cache", "llmserve-inference", "llmserve-router"])

        def shape(node):
            return (node["service"], node["spanId"], [shape(c) for c in node["children"]])

        (root,) = tree["roots"]
        self.assertEqual(shape(root), (
            "llmserve-router", ids["rs"], [
                ("llmserve-router", ids["rc"], [
                    ("llmserve-inference", ids["is"], [
                        ("llmserve-inference", ids["is2"], []),  # ordered by start
                        ("llmserve-inference", ids["ic"], [
                            ("llmserve-cache", ids["cs"], [])])])])]))
        self.assertEqual(root["children"][0]["children"][0]["children"][1]["children"][0]
                         ["attributes"], {"rpc.system": "grpc"})

    def test_16_duplicates_loops_and_chunked_bodies(self):
        t = new_id(16)
        a, b, c, d = (new_id(8) for _ in range(4))
        spans = [span(t, a, "a", parent=b), span(t, b, "b", parent=a, start=T0 + 1),
                 span(t, c, "self", parent=c, start=T0 + 3), span(t, d, "first"),
                 span(t, d, "again", start=T0 + 2)]
        body = json.dumps(request(("svc", spans))).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.r.port, timeout=30)
        try:  # chunked, as an exporter that streams its body sends it
            conn.request("POST", "/v1/traces", body=iter([body[:100], body[100:]]),
                         headers={"Content-Type": "application/json"}, encode_chunked=True)
            resp = conn.getresponse()
            self.assertEqual((resp.status, json.loads(resp.read())), (200, {}))
        finally:
            conn.close()
        self.assertEqual(len(self.r.get("/_receiver/traces")[t]), 5)
        self.assertEqual(self.r.get("/_receiver/stats")["duplicate_spans"], 1)
        tree = self.r.get("/_receiver/trace/" + t)
        self.assertEqual([(n["name"], n["children"]) for n in tree["roots"]], [("again", [])])
        self.assertEqual(([n["name"] for n in tree["cycles"]], tree["orphans"]),
                         (["a", "b", "self"], []))

    def test_17_sigterm_and_sigint_exit_0(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            own = []
            port = procs.start([RECEIVER, "--listen", "127.0.0.1:0"], own, timeout=20)
            r = Receiver(port)
            r.put("/_receiver/delay?ms=10000")
            # An export held in a delay must not hold up the exit.
            threading.Thread(target=lambda: self.swallow(
                r.export, request(("svc", [span(new_id(16), new_id(8))]))), daemon=True).start()
            time.sleep(0.2)
            start = time.monotonic()
            own[0].send_signal(sig)
            self.assertEqual(own[0].wait(10), 0)
            self.assertLess(time.monotonic() - start, 3.0)
            own[0].stdout.close()

    def test_18_discard_answers_without_decoding(self):
        own = []
        try:
            r = Receiver(procs.start([RECEIVER, "--discard"], own, timeout=20))
            good = request(("svc", [span(new_id(16), new_id(8))]))
            self.assertEqual(r.export(good)[0], 200)
            status, _, body = r.export(None, raw=b"not json at all")
            self.assertEqual((status, body), (200, {}))
            stats = r.get("/_receiver/stats")
            self.assertEqual(stats["requests"], 2)
            self.assertGreater(stats["bytes_received"], 15)
            self.assertEqual((stats["spans_accepted"], stats["traces"]), (0, 0))
            self.assertEqual(r.get("/_receiver/traces"), {})
        finally:
            self.assertEqual(procs.stop_all(own), [])

    @staticmethod
    def swallow(fn, *args):
        try:
            fn(*args)
        except Exception:
            pass


if __name__ == "__main__":
    unittest.main(verbosity=2)
