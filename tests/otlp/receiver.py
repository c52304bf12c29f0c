#!/usr/bin/python3
"""A stand-in OTLP/HTTP trace receiver for the suite's tests (Jaeger cannot be installed
here): it takes what the services export to POST /v1/traces as OTLP/JSON, checks it as the
OTLP JSON encoding requires, and rebuilds the traces so that a test can ask what a user
would have seen in Jaeger.  State lives in memory only.

    receiver.py [--listen HOST:PORT] [--strict] [--max-body-bytes N] [--verbose] [--discard]

--discard (for benchmarks, where the receiver shares the machine with what is measured):
every POST /v1/traces is read and answered 200 {} without being decoded, checked or
kept; only the requests and bytes_received counters move.

Prints "LISTENING port=N" once bound and then "SERVING", as the services do.  SIGTERM or
SIGINT: exits 0 at once.

Facts from opentelemetry-proto docs/specification.md (OTLP/HTTP, JSON Protobuf Encoding),
examples/trace.json and the trace.proto, common.proto, resource.proto and trace_service.proto
field lists.

The transport:
- POST /v1/traces, Content-Type application/json (parameters allowed; a charset must be
  utf-8).  application/x-protobuf is a valid OTLP encoding but the stand-in decodes JSON
  only: it answers 415, as it does any other or a missing type.  Other methods: 405.
- Content-Encoding gzip is decompressed (identity or none: as is; others: 415; a bad gzip
  stream: 400).  Content-Length or chunked bodies.  A body over --max-body-bytes (default
  64 MiB, the spec's recommendation), before or after decompression: 413.
- Answers are JSON (Content-Type application/json): 200 with {} when every span was
  accepted, and also for an empty request (no resourceSpans), as the spec asks.  When some
  spans were rejected and some accepted: 200 with
  {"partialSuccess": {"rejectedSpans": "<n>", "errorMessage": "..."}} (rejectedSpans is an
  int64, so a string).  4xx and 5xx carry a google.rpc.Status as JSON: {"code": <gRPC code>,
  "message": ..., "details": [...]}; a 400 for a body that does not decode or whose spans
  were all rejected has a google.rpc.BadRequest in details, whose fieldViolations name the
  fields (resourceSpans[0].scopeSpans[0].spans[1].traceId) and what is wrong with them (a
  400 for a bad gzip stream or chunk has none).

What is checked, and the choices made where the spec leaves room:
- The envelope, whose errors fail the whole request with 400 (code 3, INVALID_ARGUMENT): a
  body that is not UTF-8 JSON (NaN or Infinity literals and duplicate keys included: a
  protobuf JSON parser refuses a field set twice), a top level that is not an object,
  resourceSpans, scopeSpans or spans that are not arrays of objects.
- Everything in a resource, a scope or a span.  An error rejects the span alone (one in a
  resource or scope rejects all of that resource's or scope's spans) and the answer is a
  partial success; the stand-in chose per-span rejection, which the spec allows, so that
  one export shows several faults.  A protobuf JSON decoder would instead fail the whole
  request on a type error; either way an exporter must not retry.  When no span at all
  was accepted the answer is 400 instead (the spec's partial success is for requests that
  were partly accepted), with every violation in details.
- Ids: traceId 16 bytes and spanId 8 bytes as hex (32 and 16 digits), not base64 as
  proto3's JSON mapping writes bytes (a base64 id is named as such in the error), not all
  zero, not empty or absent (required).  The spec makes the hex case-insensitive (its own
  example is upper case), so upper case is accepted and stored in lower case; --strict
  rejects it (the traceparent header is lower case, and so should our exporter be).
  parentSpanId: empty or absent for a root; all zero is taken as a root too (--strict:
  rejected).  Links' ids follow the same rules.
- Field names are lowerCamelCase.  The spec says original proto names (trace_id) are not
  valid keys and that receivers MUST ignore unknown fields, so a snake_case key is
  ignored like any unknown one (and a span whose traceId was only given as trace_id then
  lacks its id).  The OpenTelemetry Collector accepts both spellings; --strict rejects a
  snake_case spelling of a known field.
- Enums (kind 0..5, status.code 0..2) MUST be JSON integers in OTLP (not the names proto3
  JSON also allows, nor strings, nor 2.0).  A value outside the enum is rejected: proto3
  enums are open, but no exporter of these enums has another value.
- 64-bit integers (startTimeUnixNano, endTimeUnixNano, timeUnixNano, intValue): decimal
  strings, as the mapping writes them; JSON integer numbers are accepted too, as the spec
  says parsers accept either (--strict rejects them).  Exponent forms, fractions,
  booleans and other types are rejected (proto3 parsers take "1e3"; the stand-in does
  not).  Ranges: fixed64 0..2**64-1, int64 signed.  32-bit fields (flags,
  dropped*Count) take a number or a decimal string.
- Semantic checks beyond decoding, from the proto's comments ("required",
  "semantically required"): span name non-empty; startTimeUnixNano and endTimeUnixNano
  non-zero with end >= start; event name non-empty and timeUnixNano non-zero; attribute
  keys non-empty and unique within one list.
- AnyValue: at most one of stringValue, boolValue, intValue, doubleValue (a number, or a
  string: a decimal, "NaN", "Infinity", "-Infinity"), arrayValue {values: [AnyValue]},
  kvlistValue {values: [KeyValue]}, bytesValue (base64, standard or URL-safe alphabet); each
  of the right JSON type.  None set is valid ("empty", kept as null).  Nesting deeper than
  32 is rejected.  stringValueStrindex and keyStrindex belong to the profiles signal: as
  the proto asks, they are counted and the value taken as absent.
- JSON null for a field means the field is absent, as in proto3 JSON.
- Resource: attributes, droppedAttributesCount, entityRefs (only checked to be an array).
  Scope: name and version strings, attributes, droppedAttributesCount.  Span: also
  traceState, flags, dropped*Count, events, links, status {code, message}.

Rebuilt traces (GET):
  /_receiver/traces          {traceId: [span, ...]} with spans ordered by start; a span is
                             {traceId, spanId, parentSpanId ("" for a root), name, kind,
                             start, end (ns, numbers), service (the resource's service.name,
                             or null), resource (its attributes), scope {name, version},
                             attributes (a flat dict: arrays as lists, kvlists as dicts,
                             bytes as base64 text, non-finite doubles as "NaN" etc.),
                             events [{name, time, attributes}], links [{traceId, spanId,
                             attributes}], status {code, message}, flags, traceState}
  /_receiver/trace/<traceId> {traceId, spanCount, services (sorted), roots, orphans,
                             cycles}: roots are spans without a parent, orphans spans whose
                             parent never arrived, each a tree whose nodes carry their
                             children (ordered by start, then spanId) in "children"; cycles
                             lists flat any span only reachable through a loop of parent
                             links.  404 for a trace never seen.  A spanId that arrives twice
                             in one trace is kept twice in the list but once (the last) in
                             the tree, and counted in stats as duplicate_spans.
  /_receiver/rejected        [{field, reason, traceId, spanId, name}] for the last 1000
                             spans rejected (ids and name as sent, when they were strings)
  /_receiver/stats           requests (POSTs to /v1/traces), spans_accepted,
                             spans_rejected, responses {status: count}, responses_4xx,
                             responses_5xx, failures_injected, bytes_received (as sent),
                             bytes_decoded (after gzip), gzip_requests, traces,
                             duplicate_spans, and lenient: counts of what the stand-in
                             accepted but --strict would reject or that it ignored
                             (hexUpperCase, int64AsNumber, zeroParentSpanId,
                             protoFieldNames, unknownFields, profilesOnlyFields)

Controls for the tests (not OTLP; never failed or delayed themselves):
  PUT /_receiver/fail?status=CODE&count=N[&retry_after=S]
                             the next N exports are answered CODE (400..599) with a Status
                             body and their spans dropped; Retry-After: S when given (seconds
                             or an HTTP-date, sent as given)
  PUT /_receiver/delay?ms=N  every export waits N ms before it is answered (0 stops it)
  DELETE /_receiver/traces   forgets everything: traces, rejections, counters, and the
                             fail and delay settings

What it does not cover: the protobuf encoding (415), OTLP/gRPC, metrics and logs, gzip
answers (Accept-Encoding is ignored), TLS, authentication headers (ignored), Status.details
beyond BadRequest, the 4 MiB answer limit (the errorMessage is kept short instead),
Jaeger's own storage, search and UI, and persistence.
"""
import argparse
import base64
import binascii
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_MAX_BODY = 64 * 1024 * 1024  # the spec's recommended request limit
MAX_DEPTH = 32                       # AnyValue nesting
MAX_REJECTED_KEPT = 1000
MAX_MESSAGE_VIOLATIONS = 5           # in partialSuccess.errorMessage and Status.message
SPAN_KIND_MAX, STATUS_CODE_MAX = 5, 2
U64, U32 = 2**64 - 1, 2**32 - 1
I64_MIN, I64_MAX = -2**63, 2**63 - 1
DECIMAL_RE = re.compile(r"^-?[0-9]+$")
HEX_RE = re.compile(r"^[0-9a-fA-F]*$")
DOUBLE_RE = re.compile(r"^-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")
LENIENT = ("hexUpperCase", "int64AsNumber", "zeroParentSpanId", "protoFieldNames",
           "unknownFields", "profilesOnlyFields")

# google.rpc.Code for the HTTP statuses the stand-in answers (the usual HTTP mapping).
RPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 10, 413: 8, 415: 3, 429: 8,
            499: 1, 500: 13, 501: 12, 502: 14, 503: 14, 504: 4}
RPC_UNKNOWN = 2


def log(msg):
    sys.stderr.write("receiver: %s\n" % msg)
    sys.stderr.flush()


# ---- decoding: the OTLP JSON encoding of ExportTraceServiceRequest ------------------------

class Invalid(Exception):
    """A field in a resource, scope or span is wrong: its spans are rejected."""

    def __init__(self, field, reason):
        Exception.__init__(self, "%s: %s" % (field, reason))
        self.field, self.reason = field, reason


class Malformed(Invalid):
    """The envelope is wrong: the whole request is answered 400."""


def _json_kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _proto_name(camel):
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), camel)


def _join(path, name):
    return "%s.%s" % (path, name) if path else name


class Decoder:
    """Checks one request; counts what it let through in self.lenient."""

    def __init__(self, strict):
        self.strict = strict
        self.lenient = dict.fromkeys(LENIENT, 0)

    def fields(self, obj, names, path, error=Invalid):
        """The known fields of message obj that are set (null is unset), by name."""
        if obj is None:
            return {}
        if not isinstance(obj, dict):
            raise error(path or "(request)", "want an object, got %s" % _json_kind(obj))
        out = {}
        for k, v in obj.items():
            if k in names:
                if v is not None:
                    out[k] = v
                continue
            camel = next((n for n in names if _proto_name(n) == k and n != k), None)
            if camel:
                self.lenient["protoFieldNames"] += 1
                if self.strict:
                    raise error(_join(path, k), "a proto field name: OTLP/JSON keys are "
                                "lowerCamelCase (%s); without --strict it is ignored" % camel)
            self.lenient["unknownFields"] += 1
        return out

    def array(self, v, path, error=Invalid):
        if v is None:
            return []
        if not isinstance(v, list):
            raise error(path, "want an array, got %s" % _json_kind(v))
        return v

    def string(self, v, path):
        if not isinstance(v, str):
            raise Invalid(path, "want a string, got %s" % _json_kind(v))
        return v

    def integer(self, v, path, lo, hi, wide):
        """An integer field; wide: a 64-bit one, which OTLP/JSON writes as a string."""
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            what = "a fraction or exponent" if isinstance(v, float) else _json_kind(v)
            raise Invalid(path, "want an integer%s, got %s"
                          % (" as a decimal string" if wide else "", what))
        if isinstance(v, int):
            if wide:
                self.lenient["int64AsNumber"] += 1
                if self.strict:
                    raise Invalid(path, "a 64-bit integer as a JSON number; OTLP/JSON writes "
                                  "it as a decimal string")
            n = v
        else:
            if not DECIMAL_RE.match(v):
                raise Invalid(path, "want a decimal integer string, got %r" % v[:40])
            n = int(v)
        if not lo <= n <= hi:
            raise Invalid(path, "%d is out of range [%d, %d]" % (n, lo, hi))
        return n

    def enum(self, v, path, top):
        if isinstance(v, str):
            raise Invalid(path, "enum as a string (%r): OTLP/JSON enums MUST be integers" % v[:40])
        if isinstance(v, bool) or not isinstance(v, int):
            raise Invalid(path, "want an integer enum value, got %s" % _json_kind(v))
        if not 0 <= v <= top:
            raise Invalid(path, "%d is not a value of the enum (0..%d)" % (v, top))
        return v

    def hex_id(self, v, nbytes, path, root_ok=False):
        """A trace or span id as lower-case hex; "" for an absent parent (root_ok)."""
        if v is None or v == "":
            if root_ok:
                return ""
            raise Invalid(path, "missing: the id is required")
        if not isinstance(v, str):
            raise Invalid(path, "want a hex string, got %s" % _json_kind(v))
        if len(v) != 2 * nbytes or not HEX_RE.match(v):
            if _is_base64(v, nbytes):
                raise Invalid(path, "%r looks base64-encoded (proto3 JSON bytes); OTLP/JSON "
                              "ids are %d hex digits" % (v, 2 * nbytes))
            raise Invalid(path, "want %d hex digits (%d bytes), got %r"
                          % (2 * nbytes, nbytes, v[:80]))
        if v != v.lower():
            self.lenient["hexUpperCase"] += 1
            if self.strict:
                raise Invalid(path, "upper-case hex %r (--strict wants lower case)" % v)
        v = v.lower()
        if v.count("0") == len(v):
            if root_ok:
                self.lenient["zeroParentSpanId"] += 1
                if self.strict:
                    raise Invalid(path, "all-zero parent id: a root's is empty (--strict)")
                return ""
            raise Invalid(path, "an all-zero id is invalid")
        return v

    def double(self, v, path):
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise Invalid(path, "want a number, got %s" % _json_kind(v))
        if isinstance(v, str):
            if v in ("NaN", "Infinity", "-Infinity"):
                return v  # kept as text: JSON has no such numbers
            if not DOUBLE_RE.match(v):
                raise Invalid(path, "want a number or a numeric string, got %r" % v[:40])
        try:
            d = float(v)
        except OverflowError:  # a JSON integer past a double's range
            d = math.inf
        if math.isinf(d):
            raise Invalid(path, "out of range of a double")
        return d

    def bytes_value(self, v, path):
        s = self.string(v, path)
        alt = b"-_" if ("-" in s or "_" in s) else None
        try:
            raw = base64.b64decode(s + "=" * (-len(s) % 4), altchars=alt, validate=True)
        except (binascii.Error, ValueError):
            raise Invalid(path, "not base64: %r" % s[:40])
        return base64.b64encode(raw).decode("ascii")

    def any_value(self, v, path, depth):
        f = self.fields(v, ("stringValue", "boolValue", "intValue", "doubleValue", "arrayValue",
                            "kvlistValue", "bytesValue", "stringValueStrindex"), path)
        if len(f) > 1:
            raise Invalid(path, "AnyValue sets %s: it is a oneof, at most one may be set"
                          % " and ".join(sorted(f)))
        if depth > MAX_DEPTH:
            raise Invalid(path, "AnyValue nested deeper than %d" % MAX_DEPTH)
        if not f:
            return None
        (name, x), = f.items()
        p = _join(path, name)
        if name == "stringValue":
            return self.string(x, p)
        if name == "boolValue":
            if not isinstance(x, bool):
                raise Invalid(p, "want true or false, got %s" % _json_kind(x))
            return x
        if name == "intValue":
            return self.integer(x, p, I64_MIN, I64_MAX, wide=True)
        if name == "doubleValue":
            return self.double(x, p)
        if name == "arrayValue":
            items = self.array(self.fields(x, ("values",), p).get("values"), p + ".values")
            return [self.any_value(it, "%s.values[%d]" % (p, i), depth + 1)
                    for i, it in enumerate(items)]
        if name == "kvlistValue":
            return self.key_values(self.fields(x, ("values",), p).get("values"), p + ".values",
                                   depth + 1)
        if name == "bytesValue":
            return self.bytes_value(x, p)
        self.integer(x, p, -2**31, 2**31 - 1, wide=False)  # stringValueStrindex
        self.lenient["profilesOnlyFields"] += 1
        return None

    def key_values(self, v, path, depth=0):
        """A repeated KeyValue as a dict; keys must be non-empty and unique."""
        out = {}
        for i, kv in enumerate(self.array(v, path)):
            p = "%s[%d]" % (path, i)
            f = self.fields(kv, ("key", "value", "keyStrindex"), p)
            if "keyStrindex" in f:
                self.integer(f["keyStrindex"], p + ".keyStrindex", -2**31, 2**31 - 1, False)
                self.lenient["profilesOnlyFields"] += 1
            key = self.string(f.get("key", ""), p + ".key")
            if not key:
                if "keyStrindex" in f:
                    continue  # a profiles dictionary reference: taken as absent
                raise Invalid(p + ".key", "an attribute key must not be empty")
            if key in out:
                raise Invalid(p + ".key", "duplicate key %r: keys MUST be unique" % key)
            out[key] = self.any_value(f.get("value"), p + ".value", depth + 1)
        return out

    def dropped(self, f, path):
        for name in ("droppedAttributesCount", "droppedEventsCount", "droppedLinksCount"):
            if name in f:
                self.integer(f[name], _join(path, name), 0, U32, wide=False)

    def resource(self, v, path):
        f = self.fields(v, ("attributes", "droppedAttributesCount", "entityRefs"), path)
        self.dropped(f, path)
        for i, ref in enumerate(self.array(f.get("entityRefs"), path + ".entityRefs")):
            if not isinstance(ref, dict):
                raise Invalid("%s.entityRefs[%d]" % (path, i), "want an object")
        return self.key_values(f.get("attributes"), path + ".attributes")

    def scope(self, v, path):
        f = self.fields(v, ("name", "version", "attributes", "droppedAttributesCount"), path)
        self.dropped(f, path)
        self.key_values(f.get("attributes"), path + ".attributes")
        return {"name": self.string(f.get("name", ""), path + ".name"),
                "version": self.string(f.get("version", ""), path + ".version")}

    def span(self, v, path):
        f = self.fields(v, (
            "traceId", "spanId", "traceState", "parentSpanId", "flags", "name", "kind",
            "startTimeUnixNano", "endTimeUnixNano", "attributes", "droppedAttributesCount",
            "events", "droppedEventsCount", "links", "droppedLinksCount", "status"), path)
        rec = {
            "traceId": self.hex_id(f.get("traceId"), 16, path + ".traceId"),
            "spanId": self.hex_id(f.get("spanId"), 8, path + ".spanId"),
            "parentSpanId": self.hex_id(f.get("parentSpanId"), 8, path + ".parentSpanId",
                                        root_ok=True),
            "name": self.string(f.get("name", ""), path + ".name"),
            "kind": self.enum(f.get("kind", 0), path + ".kind", SPAN_KIND_MAX),
            "traceState": self.string(f.get("traceState", ""), path + ".traceState"),
            "flags": self.integer(f.get("flags", 0), path + ".flags", 0, U32, wide=False),
        }
        if not rec["name"]:
            raise Invalid(path + ".name", "missing: a span name is required")
        for key, name in (("start", "startTimeUnixNano"), ("end", "endTimeUnixNano")):
            rec[key] = self.integer(f.get(name, "0"), _join(path, name), 0, U64, wide=True)
            if rec[key] == 0:
                raise Invalid(_join(path, name), "missing: semantically required")
        if rec["end"] < rec["start"]:
            raise Invalid(path + ".endTimeUnixNano", "end %d is before start %d"
                          % (rec["end"], rec["start"]))
        self.dropped(f, path)
        rec["attributes"] = self.key_values(f.get("attributes"), path + ".attributes")
        rec["events"] = []
        for i, ev in enumerate(self.array(f.get("events"), path + ".events")):
            p = "%s.events[%d]" % (path, i)
            fe = self.fields(ev, ("timeUnixNano", "name", "attributes", "droppedAttributesCount"),
                             p)
            when = self.integer(fe.get("timeUnixNano", "0"), p + ".timeUnixNano", 0, U64, True)
            if when == 0:
                raise Invalid(p + ".timeUnixNano", "missing: an event needs its time")
            name = self.string(fe.get("name", ""), p + ".name")
            if not name:
                raise Invalid(p + ".name", "missing: an event name is required")
            self.dropped(fe, p)
            rec["events"].append({"name": name, "time": when,
                                  "attributes": self.key_values(fe.get("attributes"),
                                                                p + ".attributes")})
        rec["links"] = []
        for i, ln in enumerate(self.array(f.get("links"), path + ".links")):
            p = "%s.links[%d]" % (path, i)
            fl = self.fields(ln, ("traceId", "spanId", "traceState", "attributes",
                                  "droppedAttributesCount", "flags"), p)
            self.string(fl.get("traceState", ""), p + ".traceState")
            self.integer(fl.get("flags", 0), p + ".flags", 0, U32, wide=False)
            self.dropped(fl, p)
            rec["links"].append({"traceId": self.hex_id(fl.get("traceId"), 16, p + ".traceId"),
                                 "spanId": self.hex_id(fl.get("spanId"), 8, p + ".spanId"),
                                 "attributes": self.key_values(fl.get("attributes"),
                                                               p + ".attributes")})
        fs = self.fields(f.get("status"), ("code", "message"), path + ".status")
        rec["status"] = {"code": self.enum(fs.get("code", 0), path + ".status.code",
                                           STATUS_CODE_MAX),
                         "message": self.string(fs.get("message", ""), path + ".status.message")}
        return rec


def _is_base64(text, nbytes):
    if not isinstance(text, str) or len(text.rstrip("=")) != math.ceil(nbytes * 4 / 3):
        return False
    alt = b"-_" if ("-" in text or "_" in text) else None
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=alt, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == nbytes


def _strict_object(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError("duplicate key %r" % k)
        out[k] = v
    return out


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)


def parse_json(body):
    """The request body as JSON; Malformed when it is not UTF-8 JSON."""
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_strict_object,
                          parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise Malformed("(request)", "not UTF-8: %s" % e)
    except RecursionError:
        raise Malformed("(request)", "JSON nested too deeply")
    except ValueError as e:
        raise Malformed("(request)", "not JSON: %s" % e)


def decode_request(doc, strict):
    """Checks an ExportTraceServiceRequest.  Returns (decoder, accepted, rejected):
    accepted the span records, rejected [(Invalid, raw span)]; raises Malformed."""
    dec = Decoder(strict)
    accepted, rejected = [], []
    top = dec.fields(doc, ("resourceSpans",), "", Malformed)
    for i, rs in enumerate(dec.array(top.get("resourceSpans"), "resourceSpans", Malformed)):
        p = "resourceSpans[%d]" % i
        if not isinstance(rs, dict):
            raise Malformed(p, "want an object, got %s" % _json_kind(rs))
        frs = dec.fields(rs, ("resource", "scopeSpans", "schemaUrl"), p, Malformed)
        groups = []  # the shape first: a wrong one fails the request before any span counts
        for j, ss in enumerate(dec.array(frs.get("scopeSpans"), p + ".scopeSpans", Malformed)):
            ps = "%s.scopeSpans[%d]" % (p, j)
            if not isinstance(ss, dict):
                raise Malformed(ps, "want an object, got %s" % _json_kind(ss))
            fss = dec.fields(ss, ("scope", "spans", "schemaUrl"), ps, Malformed)
            spans = dec.array(fss.get("spans"), ps + ".spans", Malformed)
            for k, sp in enumerate(spans):
                if not isinstance(sp, dict):
                    raise Malformed("%s.spans[%d]" % (ps, k), "want an object, got %s"
                                    % _json_kind(sp))
            groups.append((ps, fss, spans))
        try:
            dec.string(frs.get("schemaUrl", ""), p + ".schemaUrl")
            res = dec.resource(frs.get("resource"), p + ".resource")
        except Invalid as e:
            rejected += [(e, sp) for _, _, spans in groups for sp in spans]
            continue
        service = res.get("service.name")
        for ps, fss, spans in groups:
            try:
                dec.string(fss.get("schemaUrl", ""), ps + ".schemaUrl")
                scope = dec.scope(fss.get("scope"), ps + ".scope")
            except Invalid as e:
                rejected += [(e, sp) for sp in spans]
                continue
            for k, sp in enumerate(spans):
                try:
                    rec = dec.span(sp, "%s.spans[%d]" % (ps, k))
                except Invalid as e:
                    rejected.append((e, sp))
                    continue
                rec.update(service=service if isinstance(service, str) else None,
                           resource=res, scope=scope)
                accepted.append(rec)
    return dec, accepted, rejected


def _summary(violations):
    text = "; ".join(str(e) for e in violations[:MAX_MESSAGE_VIOLATIONS])
    more = len(violations) - MAX_MESSAGE_VIOLATIONS
    return text + ("; and %d more" % more if more > 0 else "")


# ---- the rebuilt traces -----------------------------------------------------------------

def _order(rec):
    return (rec["start"], rec["spanId"])


def build_tree(trace_id, spans):
    """One trace as roots, orphans and cycles (see the module's docstring)."""
    by_id = {s["spanId"]: s for s in spans}
    children = {}
    for s in by_id.values():
        if s["parentSpanId"] and s["parentSpanId"] in by_id:
            children.setdefault(s["parentSpanId"], []).append(s)
    seen = set()

    def node(s):
        seen.add(s["spanId"])
        out = dict(s)
        out["children"] = [node(c) for c in sorted(children.get(s["spanId"], []), key=_order)]
        return out

    tops = sorted(by_id.values(), key=_order)
    roots = [node(s) for s in tops if not s["parentSpanId"]]
    orphans = [node(s) for s in tops if s["parentSpanId"] and s["parentSpanId"] not in by_id]
    cycles = [s for s in tops if s["spanId"] not in seen]
    return {"traceId": trace_id, "spanCount": len(spans),
            "services": sorted({s["service"] for s in spans if s["service"] is not None}),
            "roots": roots, "orphans": orphans, "cycles": cycles}


class Store:
    """What the receiver was sent, and its controls.  One lock guards all of it."""

    def __init__(self, strict, max_body, discard=False):
        self.strict, self.max_body, self.discard = strict, max_body, discard
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        """Called with the lock held, or before any thread runs."""
        self.traces = {}       # traceId -> [span record] in arrival order
        self.rejected = []     # the last MAX_REJECTED_KEPT rejections
        self.fail_status = self.fail_count = self.delay_ms = 0
        self.retry_after = None
        self.stats = {"requests": 0, "spans_accepted": 0, "spans_rejected": 0,
                      "responses": {}, "responses_4xx": 0, "responses_5xx": 0,
                      "failures_injected": 0, "bytes_received": 0, "bytes_decoded": 0,
                      "gzip_requests": 0, "duplicate_spans": 0,
                      "lenient": dict.fromkeys(LENIENT, 0)}

    def answered(self, status):
        with self.lock:
            st = self.stats
            st["responses"][str(status)] = st["responses"].get(str(status), 0) + 1
            if 400 <= status < 500:
                st["responses_4xx"] += 1
            elif status >= 500:
                st["responses_5xx"] += 1

    def keep(self, dec, accepted, rejected):
        with self.lock:
            for k, n in dec.lenient.items():
                self.stats["lenient"][k] += n
            self.stats["spans_accepted"] += len(accepted)
            self.stats["spans_rejected"] += len(rejected)
            for rec in accepted:
                spans = self.traces.setdefault(rec["traceId"], [])
                if any(s["spanId"] == rec["spanId"] for s in spans):
                    self.stats["duplicate_spans"] += 1
                spans.append(rec)
            for e, raw in rejected:
                sent = lambda k: raw.get(k) if isinstance(raw.get(k), str) else None  # noqa
                self.rejected.append({"field": e.field, "reason": e.reason,
                                      "traceId": sent("traceId"), "spanId": sent("spanId"),
                                      "name": sent("name")})
            del self.rejected[:-MAX_REJECTED_KEPT]


# ---- HTTP ----------------------------------------------------------------------------------

class HTTPError(Exception):
    def __init__(self, status, message, details=None, headers=None):
        Exception.__init__(self, message)
        self.status, self.message = status, message
        self.details, self.headers = details, headers or {}


def status_body(status, message, details=None):
    """A google.rpc.Status in JSON, the body OTLP/HTTP asks for with a 4xx or 5xx."""
    body = {"code": RPC_CODE.get(status, RPC_UNKNOWN), "message": message}
    if details:
        body["details"] = details
    return body


def bad_request_details(violations):
    return [{"@type": "type.googleapis.com/google.rpc.BadRequest",
             "fieldViolations": [{"field": e.field, "description": e.reason}
                                 for e in violations]}]


def media_type(value):
    """(type, {param: value}) of a Content-Type header, lower-cased."""
    parts = [p.strip() for p in (value or "").split(";")]
    params = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        params[k.strip().lower()] = v.strip().strip('"').lower()
    return parts[0].lower(), params


def gunzip(data, limit):
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
        if len(out) > limit:
            raise HTTPError(413, "the body is over %d bytes after decompression" % limit)
        out += d.flush()
        if not d.eof or d.unused_data:
            raise HTTPError(400, "the gzip stream is truncated or has trailing data")
    except zlib.error as e:
        raise HTTPError(400, "bad gzip body: %s" % e)
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as exporters expect
    server_version = "llmserve-otlp-receiver"
    store = None                   # set in main
    verbose = False

    def log_message(self, fmt, *args):
        if self.verbose:
            log("%s %s" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.dispatch("GET")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def read_body(self, limit):
        """The body as sent (Content-Length or chunked); 413 past limit."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise HTTPError(400, "bad chunk size line %r" % line[:40])
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                if len(out) + size > limit:
                    self.close_connection = True
                    raise HTTPError(413, "the body is over %d bytes" % limit)
                out += self.rfile.read(size)
                self.rfile.readline(1024)
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise HTTPError(400, "bad Content-Length")
        if n > limit:
            self.close_connection = True  # the body is not read
            raise HTTPError(413, "the body is over %d bytes" % limit)
        return self.rfile.read(n) if n > 0 else b""

    def reply(self, status, payload, headers=None):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def dispatch(self, method):
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query, keep_blank_values=True)
        export = path == "/v1/traces"
        try:
            if export:
                status, payload, headers = self.export(method)
            elif path.startswith("/_receiver/"):
                self.read_body(self.store.max_body)
                status, payload, headers = self.control(method, path, query)
            else:
                self.read_body(self.store.max_body)
                raise HTTPError(404, "no such path: %s" % path)
        except HTTPError as e:
            status, payload = e.status, status_body(e.status, e.message, e.details)
            headers = e.headers
        except (ConnectionError, socket.timeout):
            self.close_connection = True
            return
        except Exception as e:  # a bug here: answer it, as a server would, and say so
            log("%s %s: %r" % (method, path, e))
            status, payload, headers = 500, status_body(500, "receiver: %r" % e), {}
            self.close_connection = True
        if export:
            self.store.answered(status)
        try:
            self.reply(status, payload, headers)
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    # -- OTLP/HTTP --

    def export(self, method):
        s = self.store
        if method != "POST":
            self.read_body(s.max_body)
            raise HTTPError(405, "method %s not allowed on /v1/traces" % method,
                            headers={"Allow": "POST"})
        with s.lock:
            s.stats["requests"] += 1
        ctype, params = media_type(self.headers.get("Content-Type"))
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        body = self.read_body(s.max_body)
        with s.lock:
            s.stats["bytes_received"] += len(body)
        if s.discard:
            return 200, {}, {}
        with s.lock:
            delay_ms, fail = s.delay_ms, (s.fail_status if s.fail_count > 0 else 0)
            retry_after = s.retry_after
            if fail:
                s.fail_count -= 1
                s.stats["failures_injected"] += 1
        if delay_ms:
            time.sleep(delay_ms / 1000.0)
        if fail:
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            raise HTTPError(fail, "receiver: injected failure", headers=headers)
        if ctype != "application/json":
            raise HTTPError(415, "Content-Type %r: this stand-in decodes application/json "
                            "only (OTLP also allows application/x-protobuf)" % ctype)
        if params.get("charset", "utf-8") != "utf-8":
            raise HTTPError(415, "charset %r: JSON is UTF-8" % params["charset"])
        if encoding == "gzip":
            body = gunzip(body, s.max_body)
            with s.lock:
                s.stats["gzip_requests"] += 1
        elif encoding != "identity":
            raise HTTPError(415, "Content-Encoding %r: only gzip is supported" % encoding)
        with s.lock:
            s.stats["bytes_decoded"] += len(body)
        try:
            dec, accepted, rejected = decode_request(parse_json(body), s.strict)
        except Malformed as e:
            raise HTTPError(400, str(e), bad_request_details([e]))
        s.keep(dec, accepted, rejected)
        violations = [e for e, _ in rejected]
        if rejected and not accepted:
            raise HTTPError(400, "every span was rejected (%d): %s"
                            % (len(rejected), _summary(violations)),
                            bad_request_details(violations))
        if rejected:
            return 200, {"partialSuccess": {
                "rejectedSpans": str(len(rejected)),
                "errorMessage": "rejected %d of %d spans: %s"
                                % (len(rejected), len(rejected) + len(accepted),
                                   _summary(violations))}}, {}
        return 200, {}, {}

    # -- the controls --

    def control(self, method, path, query):
        s = self.store

        def number(name, required=True):
            if name not in query:
                if required:
                    raise HTTPError(400, "?%s= is required" % name)
                return None
            try:
                n = int(query[name][0])
            except ValueError:
                raise HTTPError(400, "?%s= wants an integer" % name)
            if n < 0:
                raise HTTPError(400, "?%s= must be >= 0" % name)
            return n

        if method == "GET":
            with s.lock:
                if path == "/_receiver/traces":
                    return 200, {t: sorted(sp, key=_order) for t, sp in s.traces.items()}, {}
                if path.startswith("/_receiver/trace/"):
                    tid = path[len("/_receiver/trace/"):].lower()
                    if tid not in s.traces:
                        raise HTTPError(404, "no spans of trace %s arrived" % tid)
                    return 200, build_tree(tid, s.traces[tid]), {}
                if path == "/_receiver/rejected":
                    return 200, list(s.rejected), {}
                if path == "/_receiver/stats":
                    stats = json.loads(json.dumps(s.stats))
                    stats["traces"] = len(s.traces)
                    return 200, stats, {}
        elif method == "PUT" and path == "/_receiver/fail":
            code, count = number("status"), number("count")
            if not 400 <= code <= 599:
                raise HTTPError(400, "?status= must be 400..599")
            retry_after = query.get("retry_after", [None])[0]
            with s.lock:
                s.fail_status, s.fail_count, s.retry_after = code, count, retry_after
            return 200, {"status": code, "count": count, "retry_after": retry_after}, {}
        elif method == "PUT" and path == "/_receiver/delay":
            ms = number("ms")
            with s.lock:
                s.delay_ms = ms
            return 200, {"ms": ms}, {}
        elif method == "DELETE" and path == "/_receiver/traces":
            with s.lock:
                s.reset()
            return 200, {}, {}
        raise HTTPError(404, "no control %s %s" % (method, path))


# ---- main ---------------------------------------------------------------------------------

class Server(ThreadingHTTPServer):
    daemon_threads = True    # a delayed answer must not hold up the exit
    block_on_close = False
    allow_reuse_address = True


def parse_args(argv):
    p = argparse.ArgumentParser(description="A stand-in OTLP/HTTP trace receiver for "
                                            "llmserve's tests (JSON encoding only).")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free one)")
    p.add_argument("--strict", action="store_true",
                   help="also reject what OTLP allows but llmserve's exporter must not send: "
                        "upper-case hex ids, 64-bit integers as numbers, all-zero parent ids, "
                        "proto (snake_case) field names")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY,
                   help="413 past this, before or after gzip (default 64 MiB)")
    p.add_argument("--verbose", action="store_true", help="one line per request on stderr")
    p.add_argument("--discard", action="store_true",
                   help="answer every export 200 {} without decoding or keeping it (benchmarks)")
    cfg = p.parse_args(argv)
    if cfg.max_body_bytes <= 0:
        p.error("--max-body-bytes must be positive")
    return cfg


def split_listen(listen):
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit("receiver: --listen wants HOST:PORT, got %r" % listen)
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv):
    cfg = parse_args(argv)
    host, port = split_listen(cfg.listen)
    Handler.store = Store(cfg.strict, cfg.max_body_bytes, cfg.discard)
    Handler.verbose = cfg.verbose
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        httpd = Server((host, port), Handler)
    except OSError as e:
        raise SystemExit("receiver: cannot listen on %s: %s" % (cfg.listen, e))

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    print("LISTENING port=%d" % httpd.server_address[1], flush=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                     name="http", daemon=True).start()
    print("SERVING", flush=True)

    while not done.wait(1.0):
        pass
    httpd.shutdown()
    httpd.server_close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # handler threads may sit in a delay: daemon threads, dropped here


if __name__ == "__main__":
    main(sys.argv[1:])
