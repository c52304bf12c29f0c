#!/usr/bin/python3
"""The suite on Consul: every service registers with the agent, the router finds the
inference and cache instances and the services find the metrics collector through it.

Consul cannot be installed here: the agent is the stand-in tests/consul/standin.py,
which speaks the same HTTP API and runs the gRPC health checks for real.  Everything
else is real: llmserve-inference, -cache, -router and -metrics processes, memcached,
Router.Complete and Router.Generate over gRPC from Python.

Scenarios (issue "Consul"): registration with Meta and a passing check; scale out (a new
instance gets traffic); scale in (SIGTERM: deregistered before the drain, no request
lost); crash (kill -9: one terminal event per request in flight, the check goes critical,
the agent reaps it); the agent killed and restarted mid-load (routing goes on, the
registrations come back); the index going backwards; an ACL token required; 200
registrations churning under load with no request lost and the router's memory flat.

Run through ctest (tests/consul.cmake), which sets the binaries, models and PYTHONPATH.
"""
import json
import os
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

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(os.path.dirname(HERE), "consul", "standin.py")
SANITIZED = "ASAN_OPTIONS" in os.environ
# Fast checks, so that a scenario takes seconds: the agent checks every 200 ms, reaps a
# service critical for 1 s; services ask every 300 ms whether the agent still has them.
CONSUL_FLAGS = ["--consul", "on", "--consul-check-interval-ms", "200",
                "--consul-check-timeout-ms", "1000", "--consul-deregister-after-ms", "1000",
                "--consul-resync-ms", "300"]


def log(msg):
    print("[consul] " + msg, file=sys.stderr, flush=True)


class Agent:
    """A stand-in agent process on a port of its own (kept across restarts)."""

    def __init__(self, extra=(), port=0):
        self.extra = list(extra)
        self.port = port
        self.proc = None
        self.token = None
        self.start()

    def start(self):
        argv = [sys.executable, STANDIN, "--listen", "127.0.0.1:%d" % self.port,
                "--reap-interval-ms", "200", "--min-deregister-ms", "500"] + self.extra
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     bufsize=0)
        self.port = procs.read_serving(self.proc, 30)
        threading.Thread(target=procs.drain, args=(self.proc.stdout,), daemon=True).start()

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def http(self, method, path, body=None, timeout=10):
        req = urllib.request.Request("http://%s%s" % (self.addr, path), method=method,
                                     data=None if body is None else json.dumps(body).encode())
        if self.token:
            req.add_header("X-Consul-Token", self.token)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read()
            return json.loads(data) if data else None

    def services(self):
        return self.http("GET", "/v1/agent/services")

    def passing(self, name):
        return self.http("GET", "/v1/health/service/%s?passing=true" % name)

    def wait(self, what, cond, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if cond():
                    return time.monotonic()
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.02)
        raise AssertionError("timed out waiting for " + what)

    def wait_passing(self, name, port, timeout=20.0):
        return self.wait("%s on port %d passing" % (name, port),
                         lambda: any(e["Service"]["Port"] == port for e in self.passing(name)),
                         timeout)


class Load:
    """Router.Complete calls in a loop on n threads; records every outcome with the time
    the call was made and the instance that served it."""

    def __init__(self, complete, n=2, prompt="Once upon a time", max_tokens=4):
        self.complete, self.n = complete, n
        self.prompt, self.max_tokens = prompt, max_tokens
        self.results = []  # (t_sent, t_done, instance or None, error or None)
        self.mu = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(n)]
        for t in self.threads:
            t.start()

    def run(self, k):
        i = 0
        while not self.stopping.is_set():
            i += 1
            req = router_pb2.CompleteRequest(request=router_pb2.GenerateSubmit(
                request_id="load-%d-%d" % (k, i), prompt="%s %d" % (self.prompt, i),
                sampling=common_pb2.SamplingParams(max_tokens=self.max_tokens)))
            t0 = time.monotonic()
            try:
                resp = self.complete(req, timeout=30)
                out = (t0, time.monotonic(), resp.route.instance, None)
            except grpc.RpcError as e:
                out = (t0, time.monotonic(), None, "%s %s" % (e.code(), e.details()))
            with self.mu:
                self.results.append(out)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(60)
        return list(self.results)

    def snapshot(self):
        with self.mu:
            return list(self.results)

    def first_on(self, instance, after=0.0, timeout=20.0):
        """The send time of the first call after `after` served by instance."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t0, _, inst, _ in self.snapshot():
                if inst == instance and t0 >= after:
                    return t0
            time.sleep(0.02)
        raise AssertionError("no call reached %s within %.0f s" % (instance, timeout))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class ConsulSuite(unittest.TestCase):
    """One agent, memcached, a cache, a collector and a router per test; instances as the
    test needs them."""

    def setUp(self):
        self.processes = []
        self.memcached = None
        self.agent = None
        self.channel = None

    def tearDown(self):
        if self.channel is not None:
            self.channel.close()
        failures = procs.stop_all(self.processes, lambda p: p.args[0] == _env("LLMSERVE_ROUTER_BIN"))
        if self.memcached is not None:
            self.memcached.terminate()
            self.memcached.wait(10)
        if self.agent is not None:
            self.agent.stop()
        if failures:
            raise AssertionError("; ".join(failures))

    # ---- processes ---------------------------------------------------------------------

    def env(self, token_file=None):
        e = dict(os.environ)
        e["CONSUL_HTTP_ADDR"] = self.agent.addr
        e.pop("CONSUL_HTTP_TOKEN", None)
        if token_file:
            e["CONSUL_HTTP_TOKEN_FILE"] = token_file
        return e

    def spawn(self, argv, env=None, ports=None):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0,
                             env=env or self.env())
        self.processes.append(p)
        port = procs.read_serving(p, 60, ports)
        threading.Thread(target=procs.drain, args=(p.stdout,), daemon=True).start()
        return p, port

    def inference(self, pool="small", version="", weight=None, grace_ms=500, env=None):
        models = _env("LLMSERVE_ROUTER_MODELS")
        argv = [_env("LLMSERVE_INFERENCE_BIN"), "--listen", "127.0.0.1:0",
                "--model", os.path.join(models, "small.bin"),
                "--tokenizer", os.path.join(models, "tok.bin"), "--pool", pool,
                "--model-name", "tiny-" + pool, "--cpu-threads", "1",
                "--grace-ms", str(grace_ms)] + CONSUL_FLAGS
        if version:
            argv += ["--model-version", version]
        if weight is not None:
            argv += ["--weight", str(weight)]
        return self.spawn(argv, env)

    def cache(self):
        self.memcached, mc_port = procs.start_memcached()
        return self.spawn([_env("LLMSERVE_CACHE_BIN"), "--listen", "127.0.0.1:0",
                           "--memcached", "--SERVER=127.0.0.1:%d" % mc_port] + CONSUL_FLAGS)

    def collector(self):
        ports = {}
        p, port = self.spawn([_env("LLMSERVE_METRICS_BIN"), "--listen", "127.0.0.1:0",
                              "--http-listen", "127.0.0.1:0"] + CONSUL_FLAGS, ports=ports)
        return p, port, ports["HTTP"]

    def router(self, extra=()):
        p, port = self.spawn([_env("LLMSERVE_ROUTER_BIN"), "--listen", "127.0.0.1:0",
                              "--tiers", "", "--grace-ms", "500", "--seed", "1",
                              "--ready-timeout-ms", "0"] + CONSUL_FLAGS + list(extra))
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % port,
                                             options=[("grpc.enable_http_proxy", 0)])
        self.generate, self.complete = procs.router_calls(self.channel)
        return p, port

    def ask(self, prompt="Once upon a time", max_tokens=4, rid="q"):
        return self.complete(router_pb2.CompleteRequest(request=router_pb2.GenerateSubmit(
            request_id=rid, prompt=prompt,
            sampling=common_pb2.SamplingParams(max_tokens=max_tokens))), timeout=30)

    def wait_routed(self, port, timeout=20.0):
        """Asks until an answer comes from the instance on port; returns the time."""
        want = "127.0.0.1:%d" % port
        end = time.monotonic() + timeout
        i = 0
        while time.monotonic() < end:
            i += 1
            try:
                if self.ask(prompt="probe %d" % i, rid="probe-%d" % i).route.instance == want:
                    return time.monotonic()
            except grpc.RpcError:
                pass
            time.sleep(0.02)
        raise AssertionError("no answer from %s within %.0f s" % (want, timeout))

    # ---- scenarios ---------------------------------------------------------------------

    def test_registration_discovery_and_metrics(self):
        self.agent = Agent()
        _, coll_grpc, coll_http = self.collector()
        _, inst = self.inference(version="v1", weight=100)
        _, cache = self.cache()
        _, router = self.router()
        for name, port in (("llmserve-inference", inst), ("llmserve-cache", cache),
                           ("llmserve-router", router), ("llmserve-metrics", coll_grpc)):
            self.agent.wait_passing(name, port)
        svcs = {s["Service"]: s for s in self.agent.services().values()}
        self.assertEqual(set(svcs), {"llmserve-inference", "llmserve-cache", "llmserve-router",
                                     "llmserve-metrics"})
        meta = svcs["llmserve-inference"]["Meta"]
        self.assertEqual(meta["pool"], "small")
        self.assertEqual(meta["version"], "v1")
        self.assertEqual(meta["weight"], "100")
        self.assertEqual(meta["model"], "tiny-small")
        self.assertTrue(int(meta["max_batch"]) >= 1)
        self.assertIn("tiers", svcs["llmserve-cache"]["Meta"])
        self.assertEqual(svcs["llmserve-metrics"]["Meta"]["http_port"], str(coll_http))
        checks = self.agent.http("GET", "/v1/agent/checks")
        for c in checks.values():
            self.assertEqual(c["Status"], "passing", c)
        self.assertTrue(all(s["Port"] > 0 and s["Address"] == "127.0.0.1"
                            for s in svcs.values()), svcs)

        # The router found the instance and the cache through Consul.
        self.wait_routed(inst)
        first = self.ask(prompt="The cache is found through Consul", max_tokens=8, rid="c1")
        self.assertFalse(first.route.cache_hit)
        hit = False
        for i in range(50):
            r = self.ask(prompt="The cache is found through Consul", max_tokens=8, rid="c%d" % i)
            if r.route.cache_hit:
                self.assertEqual(r.text, first.text)
                hit = True
                break
            time.sleep(0.1)
        self.assertTrue(hit, "no cache hit: the router did not find the cache through Consul")

        # Every service found the collector through Consul and reports to it.
        def reported():
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % coll_http,
                                        timeout=5) as r:
                text = r.read().decode()
            return all('service="%s"' % s in text for s in ("router", "inference", "cache"))
        self.agent.wait("every service reporting to the collector found in Consul", reported,
                        timeout=30)

    def test_scale_out_and_in_under_load(self):
        self.agent = Agent()
        _, a = self.inference()
        self.router()
        self.wait_routed(a)
        load = Load(self.complete, n=2)
        try:
            # Scale out: a new instance gets traffic soon after its check passes.
            _, b = self.inference(grace_ms=3000)
            t_pass = self.agent.wait_passing("llmserve-inference", b)
            t_first = load.first_on("127.0.0.1:%d" % b, after=t_pass - 5)
            log("scale out: first routed request %.0f ms after the check passed"
                % ((t_first - t_pass) * 1000))
            self.assertLess(t_first - t_pass, 3.0)

            # Scale in: SIGTERM takes b out of Consul before it drains; nothing is lost.
            pb = self.processes[-1]
            time.sleep(0.5)
            t_term = time.monotonic()
            pb.send_signal(signal.SIGTERM)
            t_gone = self.agent.wait(
                "b deregistered",
                lambda: all(s["Port"] != b for s in self.agent.services().values()), 5)
            self.assertIsNone(pb.poll(), "b exited before it was deregistered: no drain "
                              "window (grace 3 s)")
            rc = pb.wait(30)
            self.assertEqual(rc, 0)
            time.sleep(1.0)
        finally:
            results = load.stop()
        on_b = [r for r in results if r[2] == "127.0.0.1:%d" % b]
        last_sent_to_b = max(t0 for t0, _, _, _ in on_b)
        log("scale in: deregistered %.0f ms after SIGTERM; last request sent to it %.0f ms "
            "after SIGTERM" % ((t_gone - t_term) * 1000, (last_sent_to_b - t_term) * 1000))
        errors = [r for r in results if r[3] is not None]
        self.assertEqual(errors, [], "requests lost during scale out/in")
        self.assertGreater(len(results), 20)
        after = [r for r in results if r[0] > t_term + 1.0]
        self.assertTrue(after and all(r[2] == "127.0.0.1:%d" % a for r in after))

    def test_crash_ends_each_request_once_and_the_agent_reaps_it(self):
        self.agent = Agent()
        _, a = self.inference()
        pc, c = self.inference()
        self.router()
        self.wait_routed(a)
        self.wait_routed(c)
        # Long answers in flight on both instances, one stream each.
        streams = []
        for i in range(6):
            req = router_pb2.GenerateRequest(submit=router_pb2.GenerateSubmit(
                request_id="long-%d" % i, prompt="A long story number %d" % i,
                sampling=common_pb2.SamplingParams(max_tokens=400)))
            streams.append(self.generate(iter([req]), timeout=60))
        events = [[] for _ in streams]
        readers = []
        for k, s in enumerate(streams):
            t = threading.Thread(target=lambda k=k, s=s: events[k].extend(s), daemon=True)
            t.start()
            readers.append(t)
        time.sleep(0.5)
        pc.kill()
        pc.wait()
        t_kill = time.monotonic()
        for t in readers:
            t.join(60)
        for k, evs in enumerate(events):
            terminal = [e for e in evs if e.WhichOneof("kind") in ("done", "error")]
            self.assertEqual(len(terminal), 1, "stream %d: %d terminal events" % (k, len(terminal)))
            self.assertIs(evs[-1], terminal[0])
        # The agent's check goes critical, then the reaper removes the registration.
        self.agent.wait("c critical", lambda: all(
            e["Service"]["Port"] != c for e in self.agent.passing("llmserve-inference")), 10)
        t_reaped = self.agent.wait("c reaped", lambda: all(
            s["Port"] != c for s in self.agent.services().values()), 15)
        log("crash: reaped %.0f ms after kill -9" % ((t_reaped - t_kill) * 1000))
        for i in range(10):
            self.assertEqual(self.ask(rid="after-%d" % i).route.instance, "127.0.0.1:%d" % a)

    def test_agent_restart_mid_load(self):
        self.agent = Agent()
        _, a = self.inference()
        _, b = self.inference()
        self.router()
        self.wait_routed(a)
        self.wait_routed(b)
        load = Load(self.complete, n=2)
        try:
            time.sleep(0.5)
            self.agent.kill()
            t_kill = time.monotonic()
            time.sleep(2.0)  # the router routes on its last good list meanwhile
            during = [r for r in load.snapshot() if r[0] > t_kill + 0.2]
            self.assertGreater(len(during), 5)
            self.assertEqual({r[2] for r in during}, {"127.0.0.1:%d" % a, "127.0.0.1:%d" % b})
            self.agent.start()  # same port, no state: the registrations are gone
            self.agent.wait("every registration back", lambda: sorted(
                s["Port"] for s in self.agent.services().values()
                if s["Service"] == "llmserve-inference") == sorted([a, b]), 15)
            self.agent.wait_passing("llmserve-inference", a)
            self.agent.wait_passing("llmserve-inference", b)
            time.sleep(1.0)
        finally:
            results = load.stop()
        errors = [r for r in results if r[3] is not None]
        self.assertEqual(errors, [], "requests failed while the agent was away")
        late = [r for r in results if r[0] > time.monotonic() - 0.8]
        self.assertTrue(late)

    def test_index_going_backwards(self):
        self.agent = Agent()
        _, a = self.inference()
        # A query holding an index above the agent's blocks for its whole wait (as on
        # Consul): a short wait, so that the reset comes within the test.
        self.router(extra=["--consul-wait-ms", "2000"])
        self.wait_routed(a)
        # The agent's index jumps back (a server restored from a snapshot): the router's
        # watch must reset and still see the next change.
        self.agent.http("PUT", "/_standin/index?set=2")
        _, b = self.inference()
        self.agent.wait_passing("llmserve-inference", b)
        self.wait_routed(b, timeout=15)

    def test_acl_token_required(self):
        token = "s3cr3t-agent-token"
        self.agent = Agent(extra=["--acl-token", token])
        # Without a token the service serves but the agent refuses it.
        _, lone = self.inference()
        time.sleep(1.0)
        self.agent.token = token
        self.assertEqual([s for s in self.agent.services().values() if s["Port"] == lone], [])
        self.agent.token = None
        with self.assertRaises(urllib.error.HTTPError) as ctx:  # as a default-deny agent
            self.agent.http("GET", "/v1/agent/self")
        self.assertEqual(ctx.exception.code, 403)
        # With CONSUL_HTTP_TOKEN_FILE it registers.
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "consul-token-%d" % os.getpid())
        with open(path, "w") as f:
            f.write(token + "\n")
        try:
            _, inst = self.inference(env=self.env(token_file=path))
            self.agent.token = token
            self.agent.wait_passing("llmserve-inference", inst)
        finally:
            os.unlink(path)
        self.assertIsNone(self.processes[0].poll(), "the instance without a token stopped")

    def test_churn_of_200_registrations_under_load(self):
        self.agent = Agent()
        _, a = self.inference()
        rp, _ = self.router()
        self.wait_routed(a)
        load = Load(self.complete, n=2)
        try:
            time.sleep(1.0)
            rss0 = rss_kb(rp.pid)
            # Instances that come and go: passing TTL checks on addresses where nothing
            # listens, so the router connects, fails, and must never route there.
            for i in range(200):
                sid = "churn-%d" % i
                self.agent.http("PUT", "/v1/agent/service/register", {
                    "ID": sid, "Name": "llmserve-inference", "Address": "127.0.0.1",
                    "Port": 1 + (i % 50), "Meta": {"pool": "small", "version": ""},
                    "Check": {"TTL": "60s", "Status": "passing"}})
                time.sleep(0.01)
                if i >= 5:
                    self.agent.http("PUT", "/v1/agent/service/deregister/churn-%d" % (i - 5))
            for i in range(195, 200):
                self.agent.http("PUT", "/v1/agent/service/deregister/churn-%d" % i)
            time.sleep(1.5)
            rss1 = rss_kb(rp.pid)
        finally:
            results = load.stop()
        errors = [r for r in results if r[3] is not None]
        log("churn: %d requests, %d errors, router RSS %d kB -> %d kB"
            % (len(results), len(errors), rss0, rss1))
        self.assertEqual(errors, [], "requests lost during churn")
        self.assertTrue(all(r[2] == "127.0.0.1:%d" % a for r in results))
        if not SANITIZED:  # AddressSanitizer's quarantine grows RSS by design
            self.assertLess(rss1 - rss0, 20 * 1024, "router RSS grew during churn")


if __name__ == "__main__":
    unittest.main(verbosity=2)
