"""The metrics path end to end, with a real Prometheus: the whole suite (memcached,
cache, a small and a large inference instance, the router) reports to llmserve-metrics;
a real Prometheus (Debian's prometheus) scrapes the collector with a copy of
deploy/prometheus/alerts.yml whose durations are shortened; llmbench drives load.

- llmbench --metrics prints the collector's view of its run beside its own;
- /metrics passes `promtool check metrics`, and every service's metrics are there;
- the large instance is frozen (SIGSTOP 1.5 s with 50 ms breaks, while requests keep
  coming) so TTFT rises: Prometheus's TTFT p95 for the large pool reflects it and
  LlmserveTTFTHigh goes firing; after the instance resumes for good it resolves;
- the status page, in headless Chromium, draws and shows what /api/summary says
  (tests/integration/status_page_check.py).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
INTERVAL_MS = "250"  # reporting interval of every service here


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8")


def fast_rules(src, dst):
    """alerts.yml with `for` in seconds instead of minutes and 15 s rate windows, so an
    alert can fire and resolve within a test."""
    with open(src) as f:
        text = f.read()
    text = re.sub(r"for: *(\d+)m", lambda m: "for: %ds" % (2 * int(m.group(1)) // 5 + 1), text)
    text = re.sub(r"\[(\d+)m\]", "[15s]", text)
    with open(dst, "w") as f:
        f.write(text)


class MetricsE2E(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.processes = []
        cls.tmp = tempfile.mkdtemp(prefix="llmserve-metrics-e2e-")
        cls.memcached = None
        cls.prom = None
        cls.load = None
        try:
            cls.start_suite()
            cls.start_prometheus()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start_suite(cls):
        models = procs.env("LLMSERVE_ROUTER_MODELS")
        cls.memcached, mc_port = procs.start_memcached()
        ports = {}
        cls.metrics_port = procs.start(
            [procs.env("LLMSERVE_METRICS_BIN"), "--listen", "127.0.0.1:0",
             "--http-listen", "127.0.0.1:0", "--window-seconds", "20", "--stale-seconds", "30"],
            cls.processes, ports=ports)
        cls.http_port = ports["HTTP"]
        cls.base = "http://127.0.0.1:%d" % cls.http_port
        report = ["--metrics", "127.0.0.1:%d" % cls.metrics_port,
                  "--metrics-interval-ms", INTERVAL_MS]
        cls.cache_port = procs.start(
            [procs.env("LLMSERVE_CACHE_BIN"), "--listen", "127.0.0.1:0",
             "--memcached", "--SERVER=127.0.0.1:%d" % mc_port] + report, cls.processes)
        inference = procs.env("LLMSERVE_INFERENCE_BIN")
        tok = os.path.join(models, "tok.bin")
        cls.small_port = procs.start(
            [inference, "--listen", "127.0.0.1:0", "--model", os.path.join(models, "small.bin"),
             "--tokenizer", tok, "--pool", "small", "--cpu-threads", "1"] + report,
            cls.processes)
        cls.large_port = procs.start(
            [inference, "--listen", "127.0.0.1:0", "--model", os.path.join(models, "large.bin"),
             "--tokenizer", tok, "--pool", "large", "--cpu-threads", "1"] + report,
            cls.processes)
        cls.large = cls.processes[-1]
        cls.router_port = procs.start(
            [procs.env("LLMSERVE_ROUTER_BIN"), "--listen", "127.0.0.1:0",
             "--pool", "small=127.0.0.1:%d" % cls.small_port,
             "--pool", "large=127.0.0.1:%d" % cls.large_port,
             "--cache", "127.0.0.1:%d" % cls.cache_port] + report, cls.processes)

    @classmethod
    def start_prometheus(cls):
        rules = os.path.join(cls.tmp, "alerts.yml")
        fast_rules(os.path.join(REPO, "deploy", "prometheus", "alerts.yml"), rules)
        conf = os.path.join(cls.tmp, "prometheus.yml")
        with open(conf, "w") as f:
            f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                    "rule_files: [%s]\n"
                    "scrape_configs:\n"
                    "  - job_name: llmserve-metrics\n"
                    "    honor_labels: true\n"
                    "    static_configs: [{targets: ['127.0.0.1:%d']}]\n" % (rules, cls.http_port))
        cls.prom_port = procs.free_port()
        cls.prom_log = open(os.path.join(cls.tmp, "prometheus.log"), "w")
        cls.prom = subprocess.Popen(
            [procs.env("LLMSERVE_PROMETHEUS"), "--config.file=" + conf,
             "--storage.tsdb.path=" + os.path.join(cls.tmp, "tsdb"),
             "--web.listen-address=127.0.0.1:%d" % cls.prom_port],
            stdin=subprocess.DEVNULL, stdout=cls.prom_log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                http_get("http://127.0.0.1:%d/-/ready" % cls.prom_port, 1)
                return
            except OSError:
                if time.monotonic() > deadline or cls.prom.poll() is not None:
                    raise RuntimeError("prometheus did not become ready; log in " + cls.prom_log.name)
                time.sleep(0.2)

    @classmethod
    def tearDownClass(cls):
        cls.stop_load()
        if cls.prom is not None:
            cls.prom.terminate()
            try:
                cls.prom.wait(20)
            except subprocess.TimeoutExpired:
                cls.prom.kill()
                cls.prom.wait()
            cls.prom_log.close()
        if getattr(cls, "large", None) is not None:
            try:
                os.kill(cls.large.pid, signal.SIGCONT)
            except OSError:
                pass
        try:
            procs.stop_suite(cls, must_exit_0=lambda p: True)
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- helpers ----------------------------------------------------------------------

    @classmethod
    def llmbench(cls, *args, timeout=300):
        argv = [procs.env("LLMSERVE_LLMBENCH_BIN"), "--router", "127.0.0.1:%d" % cls.router_port,
                "--no-progress"] + list(args)
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    @classmethod
    def start_load(cls):
        """Endless load on the large pool (complex prompts), 4 streams, in the background."""
        argv = [procs.env("LLMSERVE_LLMBENCH_BIN"), "--router", "127.0.0.1:%d" % cls.router_port,
                "--no-progress", "--streams", "4", "--requests", "100000000", "--max-tokens", "16",
                "--mix", "simple:0,complex:1,repeat:0"]
        cls.load = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)

    @classmethod
    def stop_load(cls):
        if cls.load is not None and cls.load.poll() is None:
            cls.load.kill()
            cls.load.wait()
        cls.load = None

    def prom_query(self, expr):
        """Prometheus instant query; [(labels, value)] with NaN results left out."""
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (
            self.prom_port, urllib.parse.urlencode({"query": expr}))
        body = json.loads(http_get(url))
        self.assertEqual(body["status"], "success", body)
        out = []
        for r in body["data"]["result"]:
            v = float(r["value"][1])
            if v == v:
                out.append((r["metric"], v))
        return out

    def alert_state(self, name, pool):
        body = json.loads(http_get("http://127.0.0.1:%d/api/v1/alerts" % self.prom_port))
        for a in body["data"]["alerts"]:
            if a["labels"].get("alertname") == name and a["labels"].get("pool") == pool:
                return a["state"]
        return "inactive"

    def ttft_p95(self, pool):
        r = self.prom_query('histogram_quantile(0.95, sum by (le, pool) '
                            '(rate(llmserve_ttft_seconds_bucket{pool="%s"}[15s])))' % pool)
        return r[0][1] if r else None

    def wait_for(self, what, cond, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = cond()
            if v:
                return v
            time.sleep(0.5)
        self.fail("within %.0f s: %s" % (timeout, what))

    # ---- the tests, in order ----------------------------------------------------------

    def test_1_llmbench_prints_the_collectors_view(self):
        r = self.llmbench("--streams", "4", "--requests", "60", "--max-tokens", "8",
                          "--metrics", "127.0.0.1:%d" % self.metrics_port,
                          "--metrics-interval-ms", INTERVAL_MS)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("== the collector's view of the mixed run", r.stdout, r.stdout)
        view = r.stdout.split("== the collector's view", 1)[1]
        m = re.search(r"TTFT\s+p50\s+([\d.]+)\s+p95\s+([\d.]+)", view)
        self.assertIsNotNone(m, view)
        self.assertGreater(float(m.group(2)), 0.0, view)
        m = re.search(r"requests\s+([\d.]+) requests/s", view)
        self.assertIsNotNone(m, view)
        self.assertGreater(float(m.group(1)), 0.0, view)

    def test_2_metrics_pass_promtool_and_every_service_reports(self):
        # a little traffic of every kind first (cache hits included)
        r = self.llmbench("--streams", "2", "--requests", "30", "--max-tokens", "4")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        time.sleep(1.0)
        text = http_get(self.base + "/metrics")
        p = subprocess.run([procs.env("LLMSERVE_PROMTOOL"), "check", "metrics"], input=text,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, "promtool check metrics:\n" + p.stdout + p.stderr)
        for service, metric in [("router", "llmserve_ttft_seconds_bucket"),
                                ("router", "llmserve_requests_total"),
                                ("router", "llmserve_inter_token_latency_seconds_count"),
                                ("inference", "llmserve_inference_batch_size_bucket"),
                                ("inference", "llmserve_inference_generated_tokens_total"),
                                ("inference", "llmserve_inference_kv_blocks_capacity"),
                                ("cache", "llmserve_cache_lookups_total"),
                                # calls that ended (the router's streams to the cache
                                # and the instances stay open: Info and health calls)
                                ("router", "llmserve_grpc_server_handled_total"),
                                ("inference", "llmserve_grpc_server_handled_total"),
                                ("router", "llmserve_up"), ("cache", "llmserve_up")]:
            self.assertRegex(text, r'(?m)^%s\{[^}]*service="%s"' % (metric, service),
                             "%s from the %s" % (metric, service))
        # and Prometheus scrapes it with the labels kept
        self.wait_for("Prometheus has the router's TTFT", lambda: self.prom_query(
            'sum by (service, pool) (llmserve_ttft_seconds_count{service="router"})'), 30)

    def test_3_frozen_instance_raises_ttft_and_the_alert_fires_then_resolves(self):
        self.start_load()
        try:
            before = self.wait_for("a TTFT p95 for the large pool",
                                   lambda: self.ttft_p95("large"), 40)
            self.assertLess(before, 0.5, "TTFT p95 before the freeze")
            self.assertEqual(self.alert_state("LlmserveTTFTHigh", "large"), "inactive")
            # Freeze the large instance in bursts while requests keep arriving, with
            # only 50 ms between bursts: a large share of requests (well above 5 %, even
            # with fast tokens) wait out a freeze before their first token.
            stop = threading.Event()

            def freezer():
                while not stop.is_set():
                    os.kill(self.large.pid, signal.SIGSTOP)
                    stop.wait(1.5)
                    os.kill(self.large.pid, signal.SIGCONT)
                    stop.wait(0.05)

            t = threading.Thread(target=freezer, daemon=True)
            t.start()
            try:
                high = self.wait_for("TTFT p95 of the large pool above 0.5 s in Prometheus",
                                     lambda: (self.ttft_p95("large") or 0) > 0.5 and
                                     self.ttft_p95("large"), 60)
                self.wait_for("LlmserveTTFTHigh firing for the large pool",
                              lambda: self.alert_state("LlmserveTTFTHigh", "large") == "firing", 60)
            finally:
                stop.set()
                t.join()
                os.kill(self.large.pid, signal.SIGCONT)
            self.assertGreater(high, 0.5)
            self.wait_for("LlmserveTTFTHigh resolved after the instance resumed",
                          lambda: self.alert_state("LlmserveTTFTHigh", "large") == "inactive", 90)
            after = self.ttft_p95("large")
            self.assertIsNotNone(after, "traffic kept flowing after the resume")
            self.assertLess(after, 0.5)
        finally:
            self.stop_load()

    def test_4_status_page_draws_what_the_summary_says(self):
        self.start_load()
        try:
            time.sleep(3)
            shot = os.path.join(self.tmp, "status.png")
            p = subprocess.run([sys.executable, os.path.join(REPO, "tests", "integration",
                                                             "status_page_check.py"),
                                "--url", self.base + "/", "--screenshot", shot],
                               capture_output=True, text=True, timeout=240)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        finally:
            self.stop_load()


if __name__ == "__main__":
    if not shutil.which("chromium"):
        print("SKIP: chromium is not installed (tools/install-deps.sh installs it)")
        sys.exit(77)
    unittest.main(verbosity=2)
