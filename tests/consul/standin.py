#!/usr/bin/python3
"""A stand-in for a Consul agent, for the suite's tests: the part of Consul's HTTP API that
llmserve's services and libs/consul use, with Consul's answers, and health checks that
really run.  State lives in memory only: killing the stand-in and starting it again on the
same port is an agent restart that lost its registrations.

    standin.py [--listen HOST:PORT] [--acl-token TOKEN]... [--reap-interval-ms N]
               [--min-deregister-ms N] [--check-update-interval-ms N]
               [--tls-ca FILE] [--tls-cert FILE] [--tls-key FILE]
               [--node NAME] [--node-address ADDR] [--verbose]

Prints "LISTENING port=N" once bound and then "SERVING", as the services do.  SIGTERM or
SIGINT: exits 0 at once (blocked queries are dropped, checks stop).

What it covers, as Consul does it (facts from Consul's documentation and its agent code):
- PUT /v1/agent/service/register: Name (required), ID (default Name), Tags, Address, Port,
  Meta (at most 64 pairs, keys [A-Za-z0-9_-] of at most 128 characters, not "consul-...",
  values of at most 512), Weights, Check or Checks (GRPC and TTL checks only).  Field
  names match without regard to case (Go's decoder) or underscores (Consul also takes
  snake_case spellings such as deregister_critical_service_after).  Check ids
  default to service:<ID>, or service:<ID>:<n> (n from 1) with several checks; names to
  "Service '<Name>' check".  A new check starts critical unless Status is given.
  Re-registering keeps the status and output of every check id that existed (Consul
  snapshots check state across a re-registration); the other checks of the service stay
  unless ?replace-existing-checks is given.  An identical re-registration changes nothing
  (no index bump), but restarts a TTL check's timer as Consul restarts its check runners.
- PUT /v1/agent/service/deregister/<id>: removes the service and its checks; 404 "Unknown
  service ID ..." when absent, as current Consul (agents before 1.11 without ACLs gave 200).
- GET /v1/agent/services, /v1/agent/service/<id> (404 "unknown service ID: <id>"),
  /v1/agent/checks, /v1/agent/self (minimal), /v1/status/leader.
- PUT /v1/agent/check/pass|warn|fail/<id>[?note=] and /v1/agent/check/update/<id>
  {"Status","Output"}: 404 "Unknown check ID ..." for an unknown check, 500 for a check
  that is not a TTL check, 400 for a bad Status.
- GET /v1/health/service/<name>: passing (present alone = true; a warning is not passing),
  tag (repeatable, all must match, case-insensitive), index and wait (blocking queries: the
  query waits while the service's index is <= index, for wait (default 5m, at most 10m)
  plus a random jitter of up to wait/16, and then answers with the current state, changed
  or not).  Entries carry the node (with its serfHealth check, always passing) and the
  service's checks, sorted by service ID; [] for an unknown service.  Headers
  X-Consul-Index, X-Consul-KnownLeader, X-Consul-LastContact.
- The index: one counter, starting at 10, bumped by every change a server would see: a
  registration that differs, a deregistration, a check status change.  Each service name
  remembers the index of its last change; X-Consul-Index is that (at least 1).  For a name
  with no instances it is the index at which any service last lost its last instance
  (Consul's "last extinction" index), or the current index if none ever did, so that a
  query on an absent service does not wake on every unrelated change.
- Output-only changes of a check (same status) reach the agent's own view
  (/v1/agent/checks) at once but the catalog's (the health endpoint, the index) only after
  --check-update-interval-ms (Consul's check_update_interval, 5 minutes; half of it plus a
  random part of it, as Consul defers them); 0 syncs them at once.
- GRPC checks: grpc.health.v1.Health/Check on "host:port[/service]" every Interval (the
  first after a random part of it, as Consul staggers), each call bounded by Timeout
  (default 10s), on one channel per check that is made again after an error and closed
  when the check goes.  SERVING is passing ("gRPC check <target>: success"); NOT_SERVING,
  an RPC error, a timeout or a refused connection is critical with the reason as Output
  ("rpc error: code = ... desc = ..." as Go's gRPC words it).  GRPCUseTLS uses --tls-ca as
  roots and --tls-cert/--tls-key as the client certificate (what a Consul agent presents),
  TLSServerName overrides the name checked.
- TTL checks: critical after TTL without an update ("TTL expired (last output before
  timeout follows): ...").
- The reaper: every --reap-interval-ms (Consul: 30 s), a service with a check critical for
  longer than its DeregisterCriticalServiceAfter (raised to --min-deregister-ms, Consul's
  1 minute, when below) is deregistered, with a line on stderr.  The critical time counts
  from the moment the check became critical (from its registration when it starts so).
- ACLs, when at least one --acl-token is given (every given token may do everything; the
  anonymous token nothing, as with default_policy deny): the token comes from ?token=,
  X-Consul-Token or "Authorization: Bearer".  An unknown token gets 403 "ACL not found".
  Without a token, as Consul answers the anonymous token: writes and reads of one named
  object get 403 "Permission denied: anonymous token lacks permission ..." (after the 404
  for an unknown service or check, in Consul's order), while list reads are filtered to
  nothing with 200 (agent/services {}, agent/checks {}, health/service []).
  /v1/status/leader needs no token.

What it does not cover: other endpoints (catalog, KV, sessions, Connect, ...), ?filter=
(answered 400), hash-based blocking, ?cached, ?stale/?consistent (ignored), ?dc, ?ns,
ACL policies (a token may do all or nothing), other check types (HTTP, TCP, UDP, script,
Docker, H2PING, alias, OS service: refused with 400), FailuresBeforeCritical and
SuccessBeforePassing (refused when set), check output truncation, maintenance mode, more
than one node, persistence.  TLSSkipVerify cannot be honoured with Python's gRPC: the
stand-in verifies the server against --tls-ca (or the system's roots) anyway.  Consul
syncs the agent's state to the catalog asynchronously (milliseconds); here it is at once.

Stand-in controls for the tests (not Consul; never ACL'd, failed or delayed):
  PUT /_standin/index?set=N      the global index, every service's index and the last
                                 extinction index become N (an index that went backwards
                                 after a server restore); changes bump from N on
  PUT /_standin/fail?status=CODE&count=N   the next N /v1 requests get CODE, body
                                 "stand-in failure"
  PUT /_standin/delay?ms=N       every /v1 answer waits N ms first (0 stops it)
  GET /_standin/stats            JSON counters: "requests" by kind (register, deregister,
                                 health, agent_service, other), requests_total,
                                 failures_injected, blocking_queries_answered (and
                                 _timed_out), checks_run (gRPC calls made),
                                 registrations_total, reaped_total; and index, services,
                                 checks as they are now
"""
import argparse
import hashlib
import ipaddress
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import grpc

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
STATUSES = (PASSING, WARNING, CRITICAL)
DATACENTER = "dc1"
INITIAL_INDEX = 10
DEFAULT_WAIT_NS = 5 * 60 * 10**9  # Consul's default blocking wait
MAX_WAIT_NS = 10 * 60 * 10**9     # and its maximum
GRPC_DEFAULT_TIMEOUT_NS = 10 * 10**9
META_MAX_PAIRS, META_KEY_MAX, META_VALUE_MAX = 64, 128, 512
META_KEY_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
HOUSEKEEPING_TICK_S = 0.02  # TTL expiry and deferred output syncs are this late at most


def log(msg):
    sys.stderr.write("standin: %s\n" % msg)
    sys.stderr.flush()


# ---- Go durations (time.ParseDuration and Duration.String) ------------------------------

_UNIT_NS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6,
            "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_NUMBER_RE = re.compile(r"([0-9]*)(?:\.([0-9]*))?")
_UNIT_RE = re.compile(r"[^0-9.]*")


def parse_duration(text):
    """Nanoseconds in text, read as Go's time.ParseDuration reads it ("1m30s", "500ms",
    "-1.5h", "0"); ValueError with Go's message otherwise."""
    quoted = '"%s"' % text
    s, neg = text, False
    if s[:1] in ("-", "+"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError("time: invalid duration " + quoted)
    total = 0
    while s:
        m = _NUMBER_RE.match(s)
        whole, frac = m.group(1), m.group(2)
        if not whole and not frac:  # neither digits before nor after a '.'
            raise ValueError("time: invalid duration " + quoted)
        s = s[m.end():]
        unit = _UNIT_RE.match(s).group(0)
        if not unit:
            raise ValueError("time: missing unit in duration " + quoted)
        if unit not in _UNIT_NS:
            raise ValueError('time: unknown unit "%s" in duration %s' % (unit, quoted))
        s = s[len(unit):]
        scale = _UNIT_NS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10**len(frac)
        if total > 2**63 - 1:
            raise ValueError("time: invalid duration " + quoted)
    return -total if neg else total


def _fraction(value, digits):
    """value / 10**digits as Go prints it: no trailing zeros, no '.' when whole."""
    whole, rest = divmod(value, 10**digits)
    tail = ("%0*d" % (digits, rest)).rstrip("0") if rest else ""
    return "%d.%s" % (whole, tail) if tail else "%d" % whole


def format_duration(ns):
    """ns as Go's Duration.String prints it ("200ms", "1m30s", "1h0m0s", "0s")."""
    if ns == 0:
        return "0s"
    sign, u = ("-" if ns < 0 else ""), abs(ns)
    if u < 10**3:
        return "%s%dns" % (sign, u)
    if u < 10**6:
        return sign + _fraction(u, 3) + "\u00b5s"
    if u < 10**9:
        return sign + _fraction(u, 6) + "ms"
    hours, rest = divmod(u, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    out = sign
    if hours:
        out += "%dh" % hours
    if hours or minutes:
        out += "%dm" % minutes
    return out + _fraction(rest, 9) + "s"


# ---- grpc.health.v1 by hand ---------------------------------------------------------------
# Modules generated from grpc/health/v1/health.proto would create a `grpc` package that
# shadows grpcio (tests/python/test_echo.py says the same), so the two messages are
# written and read here.

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
SERVING_STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


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


def encode_health_request(service):
    """HealthCheckRequest{service = 1}; proto3 leaves an empty string out."""
    raw = service.encode("utf-8")
    return b"\x0a" + _varint(len(raw)) + raw if raw else b""


def _read_varint(buf, i):
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def decode_health_response(buf):
    """HealthCheckResponse.status (field 1, enum); unknown fields are skipped."""
    status, i = 0, 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
            if field == 1:
                status = value
        elif wire == 2:
            n, i = _read_varint(buf, i)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError("wire type %d" % wire)
    if i != len(buf):
        raise ValueError("truncated message")
    return status


def go_code_name(code):
    """grpc.StatusCode.DEADLINE_EXCEEDED -> "DeadlineExceeded", as Go's codes print."""
    return "".join(part.capitalize() for part in code.name.split("_"))


def _identity(b):
    return b


# ---- errors -------------------------------------------------------------------------------

class HTTPError(Exception):
    def __init__(self, status, body, headers=None):
        super().__init__(body)
        self.status, self.body, self.headers = status, body, headers or {}


def decode_failed(msg):
    return HTTPError(400, "Request decode failed: %s" % msg)


def permission_denied(perm, on):
    return HTTPError(403, "Permission denied: anonymous token lacks permission '%s' on \"%s\". "
                          "The anonymous token is used implicitly when a request does not "
                          "specify a token." % (perm, on))


# ---- decoding a registration as Consul's decoder would --------------------------------------

def _fold(key):
    """Go's JSON decoder matches field names without regard to case, and Consul also takes
    the snake_case spellings (deregister_critical_service_after)."""
    return key.replace("_", "").lower()


def _fields(obj, where):
    if not isinstance(obj, dict):
        raise decode_failed("%s: want a JSON object" % where)
    return {_fold(k): v for k, v in obj.items()}


def _typed(fields, key, kind, default, where):
    v = fields.get(key)
    if v is None:
        return default
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if not ok:
        raise decode_failed("json: cannot unmarshal %s into Go struct field %s.%s"
                            % (type(v).__name__, where, key))
    return v


def _duration(fields, key, where):
    """A duration field: a Go duration string, or a number of nanoseconds."""
    v = fields.get(key)
    if v is None or v == "":
        return 0
    if isinstance(v, bool):
        raise decode_failed("%s.%s: not a duration" % (where, key))
    if isinstance(v, (int, float)):
        return int(v)
    if isinstance(v, str):
        try:
            return parse_duration(v)
        except ValueError as e:
            raise decode_failed(str(e))
    raise decode_failed("%s.%s: not a duration" % (where, key))


_UNSUPPORTED_CHECK_FIELDS = ("http", "tcp", "udp", "args", "scriptargs", "dockercontainerid",
                             "h2ping", "aliasservice", "aliasnode", "osservice")
_UNSUPPORTED_COUNTERS = ("failuresbeforecritical", "failuresbeforewarning",
                         "successbeforepassing")


def decode_check(obj):
    """A check definition as a dict of its settings, or None for an empty one (Consul skips
    a check whose every field is unset)."""
    f = _fields(obj, "CheckType")
    if not any(v not in (None, "", 0, False, [], {}) for v in f.values()):
        return None
    for key in _UNSUPPORTED_CHECK_FIELDS:
        if f.get(key):
            raise HTTPError(400, "stand-in: only GRPC and TTL checks are supported (got %s)"
                            % key)
    for key in _UNSUPPORTED_COUNTERS:
        if f.get(key):
            raise HTTPError(400, "stand-in: %s is not supported" % key)
    return {
        "check_id": _typed(f, "checkid", str, "", "CheckType"),
        "name": _typed(f, "name", str, "", "CheckType"),
        "notes": _typed(f, "notes", str, "", "CheckType"),
        "status": _typed(f, "status", str, "", "CheckType"),
        "grpc": _typed(f, "grpc", str, "", "CheckType"),
        "grpc_use_tls": _typed(f, "grpcusetls", bool, False, "CheckType"),
        "tls_server_name": _typed(f, "tlsservername", str, "", "CheckType"),
        "tls_skip_verify": _typed(f, "tlsskipverify", bool, False, "CheckType"),
        "interval_ns": _duration(f, "interval", "CheckType"),
        "timeout_ns": _duration(f, "timeout", "CheckType"),
        "ttl_ns": _duration(f, "ttl", "CheckType"),
        "deregister_after_ns": _duration(f, "deregistercriticalserviceafter", "CheckType"),
    }


def validate_check(c):
    """CheckType.Validate, in Consul's order and words."""
    if c["interval_ns"] > 0 and c["ttl_ns"] > 0:
        raise HTTPError(400, "Invalid check: Interval and TTL cannot both be specified")
    if c["grpc"] and c["interval_ns"] <= 0:
        raise HTTPError(400, "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, "
                             "TCP, UDP or GRPC checks")
    if not c["grpc"] and c["ttl_ns"] <= 0:
        raise HTTPError(400, "Invalid check: TTL must be > 0 for TTL checks")


def validate_meta(meta):
    """Consul's ValidateServiceMetadata, with its words (the pair limit says "Node")."""
    if len(meta) > META_MAX_PAIRS:
        raise HTTPError(400, "Invalid Service Meta: Node metadata cannot contain more than "
                             "%d key/value pairs" % META_MAX_PAIRS)
    for key, value in meta.items():
        why = None
        if key == "":
            why = "Key cannot be blank"
        elif not META_KEY_RE.match(key):
            why = "Key contains invalid characters"
        elif len(key) > META_KEY_MAX:
            why = "Key is too long (limit: %d characters)" % META_KEY_MAX
        elif key.startswith("consul-"):
            why = "Key prefix 'consul-' is reserved for internal use"
        elif len(value) > META_VALUE_MAX:
            why = "Value is too long (limit: %d characters)" % META_VALUE_MAX
        if why:
            raise HTTPError(400, "Invalid Service Meta: Couldn't load metadata pair "
                                 "('%s', '%s'): %s" % (key, value, why))


def tagged_addresses(address, port):
    """The lan/wan tagged addresses Consul adds for a service with an IP address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return {}
    fam = "ipv4" if ip.version == 4 else "ipv6"
    sa = {"Address": address, "Port": port}
    return {"lan_" + fam: dict(sa), "wan_" + fam: dict(sa)}


def decode_registration(body):
    """(service, [check definitions]) from a register body; HTTPError 400 otherwise."""
    try:
        obj = json.loads(body.decode("utf-8") if body else "null")
    except (UnicodeDecodeError, ValueError) as e:
        raise decode_failed(e)
    if obj is None:
        obj = {}
    f = _fields(obj, "ServiceDefinition")
    name = _typed(f, "name", str, "", "ServiceDefinition")
    tags = _typed(f, "tags", list, [], "ServiceDefinition")
    meta = _typed(f, "meta", dict, {}, "ServiceDefinition")
    if not all(isinstance(t, str) for t in tags):
        raise decode_failed("json: cannot unmarshal into Go struct field ServiceDefinition.Tags")
    if not all(isinstance(v, str) for v in meta.values()):
        raise decode_failed("json: cannot unmarshal into Go struct field ServiceDefinition.Meta")
    weights = _typed(f, "weights", dict, None, "ServiceDefinition")
    svc = {
        "ID": _typed(f, "id", str, "", "ServiceDefinition") or name,
        "Service": name,
        "Tags": list(tags),
        "Meta": dict(meta),
        "Port": _typed(f, "port", int, 0, "ServiceDefinition"),
        "Address": _typed(f, "address", str, "", "ServiceDefinition"),
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": _typed(f, "enabletagoverride", bool, False, "ServiceDefinition"),
    }
    if weights is not None:
        w = _fields(weights, "Weights")
        svc["Weights"] = {"Passing": _typed(w, "passing", int, 0, "Weights"),
                          "Warning": _typed(w, "warning", int, 0, "Weights")}
    defs = []
    one = f.get("check")
    if one is not None:
        c = decode_check(one)
        if c:
            defs.append(c)
    many = _typed(f, "checks", list, [], "ServiceDefinition")
    for item in many:
        c = decode_check(item)
        if c:
            defs.append(c)
    return svc, defs


def validate_registration(svc, defs):
    """What Consul checks after the name and the token: weights, meta, check statuses."""
    if svc["Address"]:
        try:
            if ipaddress.ip_address(svc["Address"]).is_unspecified:
                raise HTTPError(400, "Invalid service address")
        except ValueError:
            pass  # a host name is allowed
    w = svc["Weights"]
    if w["Passing"] < 1:
        raise HTTPError(400, "Invalid Weights: Passing must be greater than 0")
    if w["Warning"] < 0:
        raise HTTPError(400, "Invalid Weights: Warning must be greater or equal than 0")
    validate_meta(svc["Meta"])
    for c in defs:
        validate_check(c)
    for c in defs:
        if c["status"] and c["status"] not in STATUSES:
            raise HTTPError(400, "Status for checks must 'passing', 'warning', 'critical'")


# ---- checks -------------------------------------------------------------------------------

class Check:
    """One check of a registered service.  Every field is guarded by the agent's lock."""

    def __init__(self, check_id, defn, svc, now):
        self.check_id = check_id
        self.defn = defn                 # decode_check's dict, check_id filled in
        self.service_id = svc["ID"]
        self.service_name = svc["Service"]
        self.service_tags = list(svc["Tags"])
        self.kind = "grpc" if defn["grpc"] else "ttl"
        self.name = defn["name"] or "Service '%s' check" % svc["Service"]
        self.status = defn["status"] or CRITICAL
        self.output = ""                 # the agent's view (/v1/agent/checks)
        self.synced_output = ""          # the catalog's view (health endpoint)
        self.sync_at = None              # monotonic time of a deferred output sync
        self.critical_since = now if self.status == CRITICAL else None
        self.ttl_deadline = None         # monotonic; TTL checks
        self.ttl_last_output = ""
        self.prober = None               # GrpcProber for GRPC checks

    def agent_json(self, node, output):
        d = self.defn
        return {
            "Node": node, "CheckID": self.check_id, "Name": self.name, "Status": self.status,
            "Notes": d["notes"], "Output": output, "ServiceID": self.service_id,
            "ServiceName": self.service_name, "ServiceTags": list(self.service_tags),
            "Type": self.kind,
            "Interval": format_duration(d["interval_ns"]) if d["interval_ns"] else "",
            "Timeout": format_duration(d["timeout_ns"]) if d["timeout_ns"] else "",
            "ExposedPort": 0, "Definition": {}, "CreateIndex": 0, "ModifyIndex": 0,
        }


class GrpcProber(threading.Thread):
    """Runs one GRPC check: a call every interval on a channel kept between calls."""

    def __init__(self, agent, check, tls):
        super().__init__(name="check " + check.check_id, daemon=True)
        self.agent, self.check = agent, check
        d = check.defn
        self.target = d["grpc"]
        self.address, _, self.service = self.target.partition("/")
        self.interval_s = d["interval_ns"] / 1e9
        self.timeout_s = (d["timeout_ns"] or GRPC_DEFAULT_TIMEOUT_NS) / 1e9
        self.use_tls, self.server_name = d["grpc_use_tls"], d["tls_server_name"]
        self.tls = tls
        self.request = encode_health_request(self.service)
        self.stopped = threading.Event()
        self.mu = threading.Lock()  # guards channel against stop() from another thread
        self.channel = None

    def _open(self):
        options = [("grpc.enable_http_proxy", 0)]
        if not self.use_tls:
            return grpc.insecure_channel(self.address, options=options)
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        creds = grpc.ssl_channel_credentials(root_certificates=self.tls["ca"],
                                             private_key=self.tls["key"],
                                             certificate_chain=self.tls["cert"])
        return grpc.secure_channel(self.address, creds, options=options)

    def _drop_channel(self):
        with self.mu:
            ch, self.channel = self.channel, None
        if ch is not None:
            ch.close()

    def probe(self):
        """(status, output) of one call, worded as Consul's gRPC check words them."""
        with self.mu:
            if self.stopped.is_set():
                return None
            if self.channel is None:
                try:
                    self.channel = self._open()
                except Exception as e:  # bad address, unreadable credentials
                    return CRITICAL, "stand-in: cannot open a channel to %s: %s" % (
                        self.address, e)
            call = self.channel.unary_unary(HEALTH_CHECK_METHOD,
                                            request_serializer=_identity,
                                            response_deserializer=_identity)
        try:
            reply = call(self.request, timeout=self.timeout_s)
            status = decode_health_response(reply)
        except grpc.RpcError as e:
            # A new channel next time: a broken one would answer from its reconnect
            # back-off, not from the server.
            self._drop_channel()
            return CRITICAL, "rpc error: code = %s desc = %s" % (go_code_name(e.code()),
                                                                 e.details())
        except ValueError as e:  # the connection is fine; the server's answer is not
            return CRITICAL, "gRPC %s: cannot parse the reply: %s" % (self.target, e)
        if status == 1:
            return PASSING, "gRPC check %s: success" % self.target
        return CRITICAL, "gRPC %s serving status: %s" % (
            self.target, SERVING_STATUS_NAMES.get(status, str(status)))

    def run(self):
        # The first call after a random part of the interval, as Consul staggers checks.
        if self.stopped.wait(random.uniform(0, self.interval_s)):
            return
        while not self.stopped.is_set():
            result = self.probe()
            if result is not None and not self.stopped.is_set():
                self.agent.record_probe(self.check, *result)
            if self.stopped.wait(self.interval_s):
                break
        self._drop_channel()

    def stop(self):
        """Stops the check; a call in flight is cancelled by closing the channel."""
        self.stopped.set()
        self._drop_channel()


# ---- the agent ----------------------------------------------------------------------------

class Agent:
    """Services, checks and the index.  Lock rule: self.cond's lock guards every field of
    the agent and of its Check objects; GrpcProber.stop() may be called with it held (it
    takes only the prober's own lock, which is never held while taking this one)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.cond = threading.Condition()
        self.services = {}           # id -> service dict (register's fields)
        self.checks = {}             # check id -> Check
        self.index = INITIAL_INDEX
        self.name_index = {}         # service name with instances -> index of last change
        self.extinction_index = 0    # index at which a name last lost its last instance
        self.node_id = str(uuid.uuid4())
        self.tokens = set(cfg.acl_token or [])
        self.fail_status, self.fail_count, self.delay_ms = 0, 0, 0
        self.stats = {"requests": {"register": 0, "deregister": 0, "health": 0,
                                   "agent_service": 0, "other": 0},
                      "requests_total": 0, "failures_injected": 0,
                      "blocking_queries_answered": 0, "blocking_queries_timed_out": 0,
                      "checks_run": 0, "registrations_total": 0, "reaped_total": 0}
        self.tls = {"ca": _read(cfg.tls_ca), "cert": _read(cfg.tls_cert),
                    "key": _read(cfg.tls_key)}
        self.closing = False
        self.next_reap = time.monotonic() + cfg.reap_interval_ms / 1000.0

    # -- the index (lock held) --

    def _bump(self, *names):
        self.index += 1
        for n in names:
            if any(s["Service"] == n for s in self.services.values()):
                self.name_index[n] = self.index
            elif self.name_index.pop(n, None) is not None:
                self.extinction_index = self.index
        self.cond.notify_all()

    def index_for(self, name):
        if name in self.name_index:
            idx = self.name_index[name]
        else:
            idx = self.extinction_index or self.index
        return max(idx, 1)

    def set_index(self, n):
        with self.cond:
            self.index = n
            for name in self.name_index:
                self.name_index[name] = n
            if self.extinction_index:
                self.extinction_index = n
            self.cond.notify_all()

    # -- ACL --

    def resolve_token(self, token):
        """True for a known token, False for the anonymous one; 403 for an unknown one.
        Always True when ACLs are off."""
        if not self.tokens:
            return True
        if not token:
            return False
        if token not in self.tokens:
            raise HTTPError(403, "ACL not found")
        return True

    # -- registration --

    def register(self, body, token, replace_existing):
        svc, defs = decode_registration(body)
        if not svc["Service"]:
            raise HTTPError(400, "Missing service name")
        allowed = self.resolve_token(token)
        validate_registration(svc, defs)
        if not allowed:
            raise permission_denied("service:write", svc["Service"])
        for i, d in enumerate(defs):
            if not d["check_id"]:
                d["check_id"] = "service:%s" % svc["ID"]
                if len(defs) > 1:
                    d["check_id"] += ":%d" % (i + 1)
        svc["TaggedAddresses"] = tagged_addresses(svc["Address"], svc["Port"])
        now = time.monotonic()
        with self.cond:
            self.stats["registrations_total"] += 1
            old = self.services.get(svc["ID"])
            changed = old != svc
            names = {svc["Service"]}
            if old is not None:
                names.add(old["Service"])
            self.services[svc["ID"]] = svc
            kept = set()
            for d in defs:
                cid = d["check_id"]
                kept.add(cid)
                prev = self.checks.get(cid)
                if prev is not None and prev.defn == d and prev.service_id == svc["ID"]:
                    prev.service_name, prev.service_tags = svc["Service"], list(svc["Tags"])
                    if prev.kind == "ttl":  # Consul restarts a TTL check's timer
                        prev.ttl_deadline = now + d["ttl_ns"] / 1e9
                    continue
                changed = True
                c = Check(cid, d, svc, now)
                if prev is not None:
                    # Consul snapshots check state across a re-registration.
                    c.status, c.output = prev.status, prev.output
                    c.synced_output, c.ttl_last_output = prev.synced_output, prev.ttl_last_output
                    c.critical_since = prev.critical_since if c.status == CRITICAL else None
                    if c.status == CRITICAL and c.critical_since is None:
                        c.critical_since = now
                    names.add(prev.service_name)
                    self._stop_check(prev)
                self.checks[cid] = c
                self._start_check(c, now)
            for cid, c in list(self.checks.items()):
                if c.service_id != svc["ID"] or cid in kept:
                    continue
                if replace_existing:
                    self._stop_check(c)
                    del self.checks[cid]
                    changed = True
                elif c.service_name != svc["Service"] or c.service_tags != svc["Tags"]:
                    c.service_name, c.service_tags = svc["Service"], list(svc["Tags"])
            if changed:
                self._bump(*names)

    def _start_check(self, c, now):
        if c.kind == "ttl":
            c.ttl_deadline = now + c.defn["ttl_ns"] / 1e9
        else:
            c.prober = GrpcProber(self, c, self.tls)
            c.prober.start()

    def _stop_check(self, c):
        if c.prober is not None:
            c.prober.stop()
            c.prober = None
        c.ttl_deadline = None

    def _remove_service(self, sid):
        svc = self.services.pop(sid)
        for cid, c in list(self.checks.items()):
            if c.service_id == sid:
                self._stop_check(c)
                del self.checks[cid]
        self._bump(svc["Service"])
        return svc

    def deregister(self, sid, token):
        allowed = self.resolve_token(token)
        with self.cond:
            svc = self.services.get(sid)
            if svc is None:
                raise HTTPError(404, 'Unknown service ID "%s". Ensure that the service ID is '
                                     'passed, not the service name.' % sid)
            if not allowed:
                raise permission_denied("service:write", svc["Service"])
            self._remove_service(sid)

    # -- check status --

    def _set_check(self, c, status, output, now):
        """Consul's local-state UpdateCheck (lock held)."""
        if status == CRITICAL:
            if c.status != CRITICAL or c.critical_since is None:
                c.critical_since = now
        else:
            c.critical_since = None
        if c.status == status and c.output == output:
            return
        if c.status != status or self.cfg.check_update_interval_ms == 0:
            c.status, c.output, c.synced_output, c.sync_at = status, output, output, None
            self._bump(c.service_name)
            return
        c.output = output
        if c.sync_at is None:
            iv = self.cfg.check_update_interval_ms / 1000.0
            c.sync_at = now + iv / 2 + random.uniform(0, iv)

    def record_probe(self, check, status, output):
        with self.cond:
            self.stats["checks_run"] += 1
            if self.checks.get(check.check_id) is check:
                self._set_check(check, status, output, time.monotonic())

    def update_ttl(self, cid, status, output, token):
        allowed = self.resolve_token(token)
        with self.cond:
            c = self.checks.get(cid)
            if c is None:
                raise HTTPError(404, 'Unknown check ID "%s". Ensure that the check ID is '
                                     'passed, not the check name.' % cid)
            if not allowed:
                raise permission_denied("service:write", c.service_name)
            if c.kind != "ttl":
                raise HTTPError(500, 'CheckID "%s" does not have associated TTL' % cid)
            now = time.monotonic()
            c.ttl_last_output = output
            c.ttl_deadline = now + c.defn["ttl_ns"] / 1e9
            self._set_check(c, status, output, now)

    # -- housekeeping: TTL expiry, deferred output syncs, the reaper --

    def housekeep(self):
        now = time.monotonic()
        with self.cond:
            for c in list(self.checks.values()):
                if c.ttl_deadline is not None and now >= c.ttl_deadline:
                    c.ttl_deadline = None  # fires once, as Go's timer; an update re-arms it
                    out = "TTL expired"
                    if c.ttl_last_output:
                        out += " (last output before timeout follows): " + c.ttl_last_output
                    log('check "%s" missed its TTL, is now critical' % c.check_id)
                    self._set_check(c, CRITICAL, out, now)
                if c.sync_at is not None and now >= c.sync_at:
                    c.sync_at = None
                    if c.synced_output != c.output:
                        c.synced_output = c.output
                        self._bump(c.service_name)
            if now < self.next_reap:
                return
            self.next_reap = now + self.cfg.reap_interval_ms / 1000.0
            for c in list(self.checks.values()):
                after_ns = c.defn["deregister_after_ns"]
                if after_ns <= 0 or c.status != CRITICAL or c.critical_since is None:
                    continue
                after_s = max(after_ns / 1e9, self.cfg.min_deregister_ms / 1000.0)
                critical_for = now - c.critical_since
                if critical_for > after_s and c.service_id in self.services:
                    self._remove_service(c.service_id)
                    self.stats["reaped_total"] += 1
                    log('reaper: check "%s" critical for %.3fs (limit %.3fs); deregistered '
                        'service "%s"' % (c.check_id, critical_for, after_s, c.service_id))

    def housekeeping_loop(self, stop):
        while not stop.wait(HOUSEKEEPING_TICK_S):
            self.housekeep()

    def stop_checks(self):
        with self.cond:
            self.closing = True
            for c in self.checks.values():
                self._stop_check(c)
            self.cond.notify_all()

    # -- reads --

    def agent_service_json(self, svc):
        out = {"ID": svc["ID"], "Service": svc["Service"], "Tags": list(svc["Tags"]),
               "Meta": dict(svc["Meta"]), "Port": svc["Port"], "Address": svc["Address"],
               "Weights": dict(svc["Weights"]), "EnableTagOverride": svc["EnableTagOverride"],
               "Datacenter": DATACENTER}
        if svc["TaggedAddresses"]:
            out["TaggedAddresses"] = svc["TaggedAddresses"]
        return out

    def agent_services(self, token):
        allowed = self.resolve_token(token)
        with self.cond:
            if not allowed:
                return {}
            return {sid: self.agent_service_json(s) for sid, s in self.services.items()}

    def agent_service(self, sid, token):
        allowed = self.resolve_token(token)
        with self.cond:
            svc = self.services.get(sid)
            if svc is None:
                raise HTTPError(404, "unknown service ID: %s" % sid)
            if not allowed:
                raise permission_denied("service:read", svc["Service"])
            out = self.agent_service_json(svc)
        out["ContentHash"] = hashlib.sha256(
            json.dumps(out, sort_keys=True).encode()).hexdigest()[:16]
        return out

    def agent_checks(self, token):
        allowed = self.resolve_token(token)
        with self.cond:
            if not allowed:
                return {}
            return {cid: c.agent_json(self.cfg.node, c.output) for cid, c in self.checks.items()}

    def node_json(self):
        a = self.cfg.node_address
        return {"ID": self.node_id, "Node": self.cfg.node, "Address": a,
                "Datacenter": DATACENTER,
                "TaggedAddresses": {"lan": a, "lan_ipv4": a, "wan": a, "wan_ipv4": a},
                "Meta": {"consul-network-segment": ""}, "CreateIndex": INITIAL_INDEX,
                "ModifyIndex": INITIAL_INDEX}

    def serf_check_json(self):
        return {"Node": self.cfg.node, "CheckID": "serfHealth", "Name": "Serf Health Status",
                "Status": PASSING, "Notes": "", "Output": "Agent alive and reachable",
                "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
                "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": {},
                "CreateIndex": INITIAL_INDEX, "ModifyIndex": INITIAL_INDEX}

    def health_service(self, name, passing, tags, index, wait_ns, token):
        """(X-Consul-Index, entries, timed_out) for GET /v1/health/service/<name>."""
        allowed = self.resolve_token(token)
        timed_out = False
        with self.cond:
            if index > 0:
                wait_s = wait_ns / 1e9
                deadline = time.monotonic() + wait_s + random.uniform(0, wait_s / 16)
                while self.index_for(name) <= index and not self.closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        timed_out = True
                        break
                    self.cond.wait(left)
            idx = self.index_for(name)
            entries = []
            wanted = [t.lower() for t in tags]
            for sid in sorted(self.services):
                svc = self.services[sid]
                if svc["Service"] != name or not allowed:
                    continue
                have = [t.lower() for t in svc["Tags"]]
                if any(t not in have for t in wanted):
                    continue
                checks = [c for c in self.checks.values() if c.service_id == sid]
                checks.sort(key=lambda c: c.check_id)
                if passing and any(c.status != PASSING for c in checks):
                    continue
                service = {"ID": sid, "Service": name, "Tags": list(svc["Tags"]),
                           "Address": svc["Address"], "Meta": dict(svc["Meta"]),
                           "Port": svc["Port"], "Weights": dict(svc["Weights"]),
                           "EnableTagOverride": svc["EnableTagOverride"],
                           "CreateIndex": idx, "ModifyIndex": idx}
                if svc["TaggedAddresses"]:
                    service["TaggedAddresses"] = svc["TaggedAddresses"]
                entries.append({"Node": self.node_json(), "Service": service,
                                "Checks": [self.serf_check_json()] +
                                          [c.agent_json(self.cfg.node, c.synced_output)
                                           for c in checks]})
        return idx, entries, timed_out

    def agent_self(self, token):
        if not self.resolve_token(token):
            raise permission_denied("agent:read", self.cfg.node)
        return {"Config": {"Datacenter": DATACENTER, "NodeName": self.cfg.node,
                           "NodeID": self.node_id, "Server": False, "Revision": "standin",
                           "Version": "0.0.0-standin"},
                "Member": {"Name": self.cfg.node, "Addr": self.cfg.node_address,
                           "Port": 8301, "Tags": {"dc": DATACENTER, "role": "node"},
                           "Status": 1}}


def _read(path):
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


# ---- HTTP ---------------------------------------------------------------------------------

class JSONString(str):
    """A string answered as JSON ("..."), not as text."""


def _kind_of(path):
    if path.startswith("/v1/agent/service/register"):
        return "register"
    if path.startswith("/v1/agent/service/deregister/"):
        return "deregister"
    if path.startswith("/v1/health/"):
        return "health"
    if path.startswith("/v1/agent/service/"):
        return "agent_service"
    return "other"


def _bool_param(query, name):
    """Consul's getBoolQueryParam: present and empty is true, else strconv.ParseBool."""
    if name not in query:
        return False
    v = query[name][0]
    if v == "":
        return True
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise HTTPError(400, "Invalid value for ?%s" % name)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Consul's Go server
    server_version = "llmserve-consul-standin"
    agent = None                   # set in main
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

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def token(self, query):
        if query.get("token", [""])[0]:
            return query["token"][0]
        if self.headers.get("X-Consul-Token"):
            return self.headers["X-Consul-Token"]
        parts = self.headers.get("Authorization", "").split(" ", 1)
        if len(parts) == 2 and parts[0].lower() == "bearer":
            return parts[1].strip()
        return ""

    def reply(self, status, payload, headers=None):
        if isinstance(payload, (bytes, str)) and not isinstance(payload, JSONString):
            body = payload.encode() if isinstance(payload, str) else payload
            ctype = "text/plain; charset=utf-8"
        else:
            body = json.dumps(payload).encode()
            ctype = "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def dispatch(self, method):
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            body = self.read_body()
            if path.startswith("/_standin/"):
                status, payload, headers = self.control(method, path, query)
            elif path == "/v1" or path.startswith("/v1/"):
                status, payload, headers = self.v1(method, path, query, body)
            else:
                status, payload, headers = 404, "404 page not found\n", {}
        except HTTPError as e:
            status, payload, headers = e.status, e.body, e.headers
        except (ConnectionError, socket.timeout):
            self.close_connection = True
            return
        try:
            self.reply(status, payload, headers)
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    # -- stand-in controls --

    def control(self, method, path, query):
        a = self.agent

        def number(name):
            try:
                return int(query[name][0])
            except (KeyError, ValueError):
                raise HTTPError(400, "stand-in: ?%s=N is required" % name)

        if path == "/_standin/stats" and method == "GET":
            with a.cond:
                stats = json.loads(json.dumps(a.stats))
                stats["index"] = a.index
                stats["services"] = len(a.services)
                stats["checks"] = len(a.checks)
            return 200, stats, {}
        if method not in ("PUT", "POST"):
            raise HTTPError(405, "method %s not allowed" % method)
        if path == "/_standin/index":
            n = number("set")
            if n < 0:
                raise HTTPError(400, "stand-in: ?set must be >= 0")
            a.set_index(n)
            return 200, {"index": n}, {}
        if path == "/_standin/fail":
            code, count = number("status"), number("count")
            with a.cond:
                a.fail_status, a.fail_count = code, max(count, 0)
            return 200, {"status": code, "count": count}, {}
        if path == "/_standin/delay":
            ms = number("ms")
            with a.cond:
                a.delay_ms = max(ms, 0)
            return 200, {"ms": ms}, {}
        raise HTTPError(404, "404 page not found\n")

    # -- Consul's API --

    def v1(self, method, path, query, body):
        a = self.agent
        with a.cond:
            a.stats["requests"][_kind_of(path)] += 1
            a.stats["requests_total"] += 1
            delay_ms = a.delay_ms
            fail = a.fail_status if a.fail_count > 0 else 0
            if fail:
                a.fail_count -= 1
                a.stats["failures_injected"] += 1
        if delay_ms:
            time.sleep(delay_ms / 1000.0)
        if fail:
            raise HTTPError(fail, "stand-in failure")
        token = self.token(query)

        def allow(*methods):
            if method not in methods:
                raise HTTPError(405, "method %s not allowed" % method,
                                {"Allow": ", ".join(methods)})

        if path == "/v1/status/leader":
            allow("GET")
            return 200, JSONString("127.0.0.1:8300"), {}  # Consul needs no token here
        if path == "/v1/agent/self":
            allow("GET")
            return 200, a.agent_self(token), {}
        if path == "/v1/agent/service/register":
            allow("PUT")
            replace = query.get("replace-existing-checks", ["false"])[0] in ("", "true")
            a.register(body, token, replace)
            return 200, b"", {}
        if path.startswith("/v1/agent/service/deregister/"):
            allow("PUT")
            a.deregister(path[len("/v1/agent/service/deregister/"):], token)
            return 200, b"", {}
        if path == "/v1/agent/services":
            allow("GET")
            self.reject_filter(query)
            return 200, a.agent_services(token), {}
        if path.startswith("/v1/agent/service/"):
            allow("GET")
            out = a.agent_service(path[len("/v1/agent/service/"):], token)
            return 200, out, {"X-Consul-ContentHash": out["ContentHash"]}
        if path == "/v1/agent/checks":
            allow("GET")
            self.reject_filter(query)
            return 200, a.agent_checks(token), {}
        m = re.match(r"^/v1/agent/check/(pass|warn|fail|update)/(.+)$", path)
        if m:
            allow("PUT")
            return self.check_update(m.group(1), m.group(2), query, body, token)
        if path.startswith("/v1/health/service/"):
            allow("GET")
            return self.health(path[len("/v1/health/service/"):], query, token)
        raise HTTPError(404, "404 page not found\n")

    @staticmethod
    def reject_filter(query):
        if "filter" in query:
            raise HTTPError(400, "stand-in: ?filter is not supported")

    def check_update(self, verb, cid, query, body, token):
        if verb == "update":
            try:
                obj = json.loads(body.decode("utf-8") if body else "{}")
            except (UnicodeDecodeError, ValueError) as e:
                raise decode_failed(e)
            f = _fields(obj if obj is not None else {}, "checkUpdate")
            status = _typed(f, "status", str, "", "checkUpdate")
            output = _typed(f, "output", str, "", "checkUpdate")
            if status not in STATUSES:
                raise HTTPError(400, "Invalid check status: '%s'" % status)
        else:
            status = {"pass": PASSING, "warn": WARNING, "fail": CRITICAL}[verb]
            output = query.get("note", [""])[0]
        self.agent.update_ttl(cid, status, output, token)
        return 200, b"", {}

    def health(self, name, query, token):
        self.reject_filter(query)
        passing = _bool_param(query, "passing")
        index = 0
        if "index" in query:
            try:
                index = int(query["index"][0])
                if index < 0:
                    raise ValueError
            except ValueError:
                raise HTTPError(400, "Invalid index")
        wait_ns = 0
        if "wait" in query:
            try:
                wait_ns = parse_duration(query["wait"][0])
            except ValueError:
                raise HTTPError(400, "Invalid wait time")
        if wait_ns <= 0:
            wait_ns = DEFAULT_WAIT_NS
        wait_ns = min(wait_ns, MAX_WAIT_NS)
        a = self.agent
        idx, entries, timed_out = a.health_service(name, passing, query.get("tag", []), index,
                                                   wait_ns, token)
        if index > 0:
            with a.cond:
                a.stats["blocking_queries_answered"] += 1
                if timed_out:
                    a.stats["blocking_queries_timed_out"] += 1
        headers = {"X-Consul-Index": str(idx), "X-Consul-KnownLeader": "true",
                   "X-Consul-LastContact": "0",
                   "X-Consul-Default-ACL-Policy": "deny" if a.tokens else "allow"}
        return 200, entries, headers


# ---- main ---------------------------------------------------------------------------------

class Server(ThreadingHTTPServer):
    daemon_threads = True    # a blocked query must not hold up the exit
    block_on_close = False
    allow_reuse_address = True  # bind a port again right after a stand-in on it was killed


def parse_args(argv):
    p = argparse.ArgumentParser(description="A Consul agent stand-in for llmserve's tests.")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free one)")
    p.add_argument("--acl-token", action="append", default=[],
                   help="an ACL token that may do everything (repeatable); none: ACLs off")
    p.add_argument("--reap-interval-ms", type=int, default=30000,
                   help="how often the reaper runs (Consul: 30 s)")
    p.add_argument("--min-deregister-ms", type=int, default=60000,
                   help="DeregisterCriticalServiceAfter is raised to this (Consul: 1 min)")
    p.add_argument("--check-update-interval-ms", type=int, default=300000,
                   help="output-only check changes reach the catalog after this "
                        "(Consul's check_update_interval, 5 min); 0: at once")
    p.add_argument("--tls-ca", help="roots for GRPCUseTLS checks (PEM)")
    p.add_argument("--tls-cert", help="client certificate for GRPCUseTLS checks (PEM)")
    p.add_argument("--tls-key", help="its key (PEM)")
    p.add_argument("--node", default="standin", help="the node's name")
    p.add_argument("--node-address", default="127.0.0.1", help="the node's address")
    p.add_argument("--verbose", action="store_true", help="one line per request on stderr")
    cfg = p.parse_args(argv)
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if cfg.reap_interval_ms <= 0 or cfg.min_deregister_ms < 0 or cfg.check_update_interval_ms < 0:
        p.error("intervals must be positive")
    return cfg


def split_listen(listen):
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit("standin: --listen wants HOST:PORT, got %r" % listen)
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv):
    cfg = parse_args(argv)
    host, port = split_listen(cfg.listen)
    try:
        agent = Agent(cfg)
    except OSError as e:
        raise SystemExit("standin: %s" % e)
    Handler.agent, Handler.verbose = agent, cfg.verbose
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        httpd = Server((host, port), Handler)
    except OSError as e:
        raise SystemExit("standin: cannot listen on %s: %s" % (cfg.listen, e))

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    print("LISTENING port=%d" % httpd.server_address[1], flush=True)
    stop_housekeeping = threading.Event()
    threading.Thread(target=agent.housekeeping_loop, args=(stop_housekeeping,),
                     name="housekeeping", daemon=True).start()
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                     name="http", daemon=True).start()
    print("SERVING", flush=True)

    while not done.wait(1.0):
        pass
    stop_housekeeping.set()
    agent.stop_checks()
    httpd.shutdown()
    httpd.server_close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Handler threads may be blocked in a query and probes in a gRPC call: daemon threads,
    # dropped here as an agent's would be.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
