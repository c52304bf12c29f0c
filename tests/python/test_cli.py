#!/usr/bin/python3
"""Every binary's command line, as an operator meets it: --help, --version, unknown
flags and bad values (exit status 2 and a message naming the flag or variable), the
environment variable of each flag giving the same effective configuration as the flag,
deprecated names still read with a warning, and an orderly stop (exit 0 after SIGTERM).

The services are started for real (the inference service on the tiny model of the
router_models fixture); their effective configuration is read from their JSON log.
"""
import json
import os
import selectors
import signal
import subprocess
import time
import unittest

BIN = {
    "router": os.environ.get("LLMSERVE_ROUTER_BIN"),
    "cache": os.environ.get("LLMSERVE_CACHE_BIN"),
    "inference": os.environ.get("LLMSERVE_INFERENCE_BIN"),
    "metrics": os.environ.get("LLMSERVE_METRICS_BIN"),
}
TOOLS = {
    "llmctl": os.environ.get("LLMSERVE_LLMCTL_BIN"),
    "llmbench": os.environ.get("LLMSERVE_LLMBENCH_BIN"),
}
MODELS = os.environ.get("LLMSERVE_ROUTER_MODELS", "")

COMMON_FLAGS = ["--listen", "--rpc-threads", "--grace-ms", "--max-write-queue", "--log-level",
                "--log-format", "--tls-cert", "--tls-key", "--tls-client-ca", "--metrics",
                "--metrics-interval-ms", "--metrics-instance"]


def required_args(service):
    """What each service needs to start at all (nothing else is running)."""
    if service == "router":
        # An instance that is not there: the router serves anyway (no wait for it).
        return ["--pool", "small=127.0.0.1:1", "--tiers", "", "--ready-timeout-ms", "0"]
    if service == "inference":
        return ["--model", os.path.join(MODELS, "small.bin"),
                "--tokenizer", os.path.join(MODELS, "tok.bin"), "--cpu-threads", "1"]
    if service == "metrics":
        return ["--http-listen", "127.0.0.1:0"]
    return ["--memcached", "--SERVER=127.0.0.1:1", "--memcached-timeout-ms", "20"]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LLMSERVE_ROUTER_", "LLMSERVE_CACHE_", "LLMSERVE_INFERENCE_",
                                "LLMSERVE_METRICS_",
                                "ROUTER_", "CACHE_", "LLMSERVE_LOG_", "OTEL_"))}
    env.update(extra)
    return env


def run(argv, env=None, timeout=30):
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env or clean_env(),
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def serve_and_stop(argv, env):
    """Starts a service, waits for SERVING, stops it with SIGTERM; returns (exit status,
    the JSON log lines)."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ, "out")
    sel.register(p.stderr, selectors.EVENT_READ, "err")
    out, err = b"", b""
    deadline = time.monotonic() + 60
    try:
        while b"\nSERVING\n" not in b"\n" + out:
            if time.monotonic() > deadline or p.poll() is not None:
                raise AssertionError("no SERVING line; stdout %r stderr %r" % (out, err[-2000:]))
            for key, _ in sel.select(0.2):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if key.data == "out":
                    out += chunk
                else:
                    err += chunk
        p.send_signal(signal.SIGTERM)
        rest_out, rest_err = p.communicate(timeout=30)
        err += rest_err
    finally:
        sel.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    lines = [json.loads(l) for l in err.decode("utf-8").splitlines() if l.startswith("{")]
    return p.returncode, lines


def effective_config(lines):
    for l in lines:
        if l.get("msg") == "effective config":
            return {k: v for k, v in l.items() if k not in ("ts", "level", "mod", "msg")}
    raise AssertionError("no effective config line in %r" % lines[:5])


class ServiceCommandLine(unittest.TestCase):
    def each(self):
        for name, path in BIN.items():
            self.assertTrue(path, "LLMSERVE_%s_BIN is not set" % name.upper())
            yield name, path

    def test_help_lists_every_common_flag_with_its_variable(self):
        for name, path in self.each():
            rc, out, _ = run([path, "--help"])
            self.assertEqual(rc, 0, name)
            self.assertIn("usage: llmserve-%s" % name, out)
            for flag in COMMON_FLAGS:
                self.assertIn(flag + " ", out, "%s --help lacks %s" % (name, flag))
                env = "LLMSERVE_%s_%s" % (name.upper(), flag[2:].upper().replace("-", "_"))
                self.assertIn(env, out, "%s --help lacks %s" % (name, env))
            if name == "router":
                for flag in ("--api-keys", "--upstream-tls-ca", "--upstream-tls-cert"):
                    self.assertIn(flag, out)

    def test_version(self):
        for name, path in self.each():
            rc, out, _ = run([path, "--version"])
            self.assertEqual(rc, 0)
            self.assertTrue(out.startswith("llmserve-%s " % name), out)

    def test_unknown_flag_exits_2_with_a_message(self):
        for name, path in self.each():
            rc, out, err = run([path, "--no-such-flag", "1"])
            self.assertEqual(rc, 2, name)
            self.assertIn("--no-such-flag", err)
            self.assertIn("llmserve-%s:" % name, err)
            rc, _, err = run([path, "--rpc-thread", "1"])
            self.assertEqual(rc, 2)
            self.assertIn("did you mean --rpc-threads", err)

    def test_bad_value_exits_2_naming_the_flag(self):
        for name, path in self.each():
            for argv, says in ((["--rpc-threads", "many"], "--rpc-threads"),
                               (["--grace-ms=-5"], "--grace-ms"),
                               (["--log-level", "loud"], "--log-level"),
                               (["--log-format", "xml"], "--log-format"),
                               (["--tls-cert", "/nonexistent/cert.pem"], "--tls-key"),
                               (["--tls-cert", "/nonexistent/c.pem", "--tls-key",
                                 "/nonexistent/k.pem"], "/nonexistent/c.pem")):
                rc, _, err = run([path] + required_args(name) + argv)
                self.assertEqual(rc, 2, "%s %s: %s" % (name, argv, err))
                self.assertIn(says, err, "%s %s" % (name, argv))
            var = "LLMSERVE_%s_RPC_THREADS" % name.upper()
            rc, _, err = run([path] + required_args(name), env=clean_env(**{var: "many"}))
            self.assertEqual(rc, 2)
            self.assertIn(var, err)
            self.assertIn("--rpc-threads", err)

    def test_environment_equals_flags(self):
        for name, path in self.each():
            prefix = "LLMSERVE_%s_" % name.upper()
            flags = {"listen": "127.0.0.1:0", "grace-ms": "1234", "rpc-threads": "1",
                     "max-write-queue": "777", "log-format": "json", "log-level": "info"}
            argv = [path] + required_args(name)
            by_flag = argv + sum((["--" + k, v] for k, v in flags.items()), [])
            rc1, lines1 = serve_and_stop(by_flag, clean_env())
            env = clean_env(**{prefix + k.upper().replace("-", "_"): v for k, v in flags.items()})
            rc2, lines2 = serve_and_stop(argv, env)
            self.assertEqual((rc1, rc2), (0, 0), name)
            c1, c2 = effective_config(lines1), effective_config(lines2)
            self.assertEqual(c1, c2, name)
            self.assertEqual(c1["grace-ms"], "1234")
            self.assertEqual(c1["max-write-queue"], "777")

    def test_deprecated_names_still_work_with_a_warning(self):
        cases = {"router": ("ROUTER_GRACE_MS", "--threads", "rpc-threads"),
                 "cache": ("CACHE_GRACE_MS", "--threads", "rpc-threads"),
                 "inference": (None, "--threads", "cpu-threads")}
        for name, path in self.each():
            if name not in cases:
                continue  # the collector is new: no old names
            var, old_flag, new = cases[name]
            env = clean_env(LLMSERVE_LOG_FORMAT="json")
            if var:
                env[var] = "4321"
            rc, lines = serve_and_stop([path] + required_args(name) +
                                       ["--listen", "127.0.0.1:0", old_flag, "1"], env)
            self.assertEqual(rc, 0)
            cfg = effective_config(lines)
            self.assertEqual(cfg[new], "1")
            warned = [l for l in lines if l.get("level") == "warn" and "deprecated" in l["msg"]]
            self.assertTrue(any(l.get("use") == "--" + new for l in warned), warned)
            if var:
                self.assertEqual(cfg["grace-ms"], "4321")
                self.assertTrue(any(l.get("var") == var for l in warned), warned)

    def test_secrets_are_redacted_in_the_effective_config(self):
        # The router's only secret-bearing option is a file path; the inference and cache
        # services log no key material either: no line holds the API key text.
        path = BIN["router"]
        keys = os.path.join(os.environ.get("TMPDIR", "/tmp"), "cli-test-keys-%d" % os.getpid())
        with open(keys, "w") as f:
            f.write("very-secret-key-material-0123456789 tenant-a\n")
        try:
            rc, lines = serve_and_stop([path] + required_args("router") +
                                       ["--listen", "127.0.0.1:0", "--api-keys", keys],
                                       clean_env(LLMSERVE_LOG_FORMAT="json"))
        finally:
            os.unlink(keys)
        self.assertEqual(rc, 0)
        self.assertNotIn("very-secret-key-material", json.dumps(lines))
        self.assertTrue(any(l.get("msg") == "API keys loaded" and l.get("keys") == "1"
                            for l in lines), lines)


def without_consul(**extra):
    """clean_env without Consul's variables (the router's auto discovery reads them)."""
    env = {k: v for k, v in clean_env().items() if not k.startswith("CONSUL_")}
    env.update(extra)
    return env


class RouterDiscoveryCommandLine(unittest.TestCase):
    def test_discovery_choices_and_refusals(self):
        path = BIN["router"]
        for argv, env, says in (
                ([], without_consul(), "no inference instance given"),
                (["--discovery", "static"], without_consul(CONSUL_HTTP_ADDR="127.0.0.1:1"),
                 "no inference instance given"),
                (["--discovery", "bogus"], without_consul(), "--discovery: 'bogus'"),
                (["--discovery", "dns"], without_consul(), "no inference instance given"),
                (["--discovery", "dns", "--pool", "small=localhost:1", "--dns-refresh-ms", "99"],
                 without_consul(), "--dns-refresh-ms"),
                (["--discovery", "dns", "--pool", "small=localhost:1", "--cache", "nohost"],
                 without_consul(), "--discovery dns: cache 'nohost'"),
                (["--discovery", "consul", "--pool", "small=127.0.0.1:1"], without_consul(),
                 "exclude each other"),
                (["--consul-inference-service", ""],
                 without_consul(CONSUL_HTTP_ADDR="127.0.0.1:1"), "--consul-inference-service"),
                (["--discovery", "consul", "--consul-wait-ms", "0"], without_consul(),
                 "--consul-wait-ms")):
            rc, _, err = run([path] + argv, env=env)
            self.assertEqual(rc, 2, "%s: %s" % (argv, err))
            self.assertIn(says, err, argv)
        rc, out, _ = run([path, "--help"], env=without_consul())
        self.assertEqual(rc, 0)
        for flag in ("--discovery", "--consul-inference-service", "--consul-cache-service",
                     "--consul-wait-ms", "--consul-wait-first-ms",
                     "LLMSERVE_ROUTER_CONSUL_WAIT_FIRST_MS", "--dns-refresh-ms",
                     "LLMSERVE_ROUTER_DNS_REFRESH_MS"):
            self.assertIn(flag, out)

    def test_dns_discovery_resolves_the_pool_names(self):
        # localhost resolves on any host; the instance it names is not there, so the router
        # serves with it unconnected (--ready-timeout-ms 0) and stops cleanly.
        rc, lines = serve_and_stop([BIN["router"], "--listen", "127.0.0.1:0", "--discovery",
                                    "dns", "--pool", "small=localhost:1", "--tiers", "",
                                    "--dns-refresh-ms", "100", "--ready-timeout-ms", "0"],
                                   without_consul(LLMSERVE_LOG_FORMAT="json"))
        self.assertEqual(rc, 0)
        self.assertEqual(effective_config(lines)["discovery"], "dns")
        used = [l for l in lines if l.get("msg") == "discovery from dns"]
        self.assertEqual(len(used), 1, lines)
        self.assertEqual(used[0]["refresh_ms"], "100")
        added = [l for l in lines if l.get("msg") == "instance added"]
        self.assertTrue(added, lines)
        self.assertTrue(all(l["addr"] in ("127.0.0.1:1", "[::1]:1") for l in added), added)

    def test_runtime_consul_options_refused_with_a_reason(self):
        # Every service: the registration options of the runtime (libs/svc).
        for name, path in BIN.items():
            for argv, env, says in (
                    (["--consul", "maybe"], without_consul(), "--consul: 'maybe'"),
                    (["--advertise", "[::1"], without_consul(), "--advertise"),
                    (["--advertise", "host:0"], without_consul(), "--advertise"),
                    (["--advertise", "::1:80"], without_consul(), "brackets"),
                    (["--metrics", "consul"], without_consul(), "--metrics consul needs"),
                    (["--consul", "on"], without_consul(CONSUL_HTTP_ADDR="ftp://x:1"),
                     "Consul configuration"),
                    (["--consul-check-interval-ms", "5"], without_consul(),
                     "--consul-check-interval-ms")):
                rc, _, err = run([path] + required_args(name) + argv, env=env)
                self.assertEqual(rc, 2, "%s %s: %s" % (name, argv, err))
                self.assertIn(says, err, "%s %s: %s" % (name, argv, err))
            # auto with no CONSUL_HTTP_ADDR reads none of Consul's other variables.
            rc, lines = serve_and_stop([path] + required_args(name) + ["--listen", "127.0.0.1:0"],
                                       without_consul(CONSUL_HTTP_TOKEN_FILE="/nonexistent/t",
                                                      LLMSERVE_LOG_FORMAT="json"))
            self.assertEqual(rc, 0, name)
            starting = [l for l in lines if l.get("msg") == "starting"]
            self.assertEqual(starting[0]["consul"], "off", name)

    def test_otel_environment_refused_with_the_variable_named(self):
        # Every service: the OTEL_* variables the runtime's tracer reads (see Traces).
        for name, path in BIN.items():
            for var, value in (("OTEL_TRACES_SAMPLER", "sometimes"),
                               ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector:4318"),
                               ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
                               ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")):
                env = clean_env(**{var: value})
                if var != "OTEL_EXPORTER_OTLP_ENDPOINT":
                    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:1"
                rc, _, err = run([path] + required_args(name), env=env)
                self.assertEqual(rc, 2, "%s %s=%s: %s" % (name, var, value, err))
                self.assertIn(var, err, "%s %s=%s" % (name, var, value))

    def test_consul_unreachable_the_router_serves_with_no_instance(self):
        # auto: no --pool and CONSUL_HTTP_ADDR set.  Nothing answers there: after
        # --consul-wait-first-ms the router serves anyway, and stops cleanly.
        token = "consul-token-material-0123456789"
        env = without_consul(CONSUL_HTTP_ADDR="127.0.0.1:1", CONSUL_HTTP_TOKEN=token,
                             LLMSERVE_LOG_FORMAT="json")
        rc, lines = serve_and_stop([BIN["router"], "--listen", "127.0.0.1:0",
                                    "--consul-wait-first-ms", "300", "--ready-timeout-ms", "0"],
                                   env)
        self.assertEqual(rc, 0)
        self.assertEqual(effective_config(lines)["discovery"], "auto")
        used = [l for l in lines if l.get("msg") == "discovery from consul"]
        self.assertEqual(len(used), 1, lines)
        self.assertIn("127.0.0.1:1", used[0]["agent"])
        self.assertEqual(used[0]["inference_service"], "llmserve-inference")
        self.assertTrue(any(l.get("level") == "warn" and "no inference list" in l["msg"]
                            for l in lines), lines)
        self.assertNotIn(token, json.dumps(lines))


class ToolCommandLine(unittest.TestCase):
    def test_tools_take_tls_and_api_key_options(self):
        for name, path in TOOLS.items():
            self.assertTrue(path, name)
            rc, out, _ = run([path, "--help"])
            self.assertEqual(rc, 0, name)
            for flag in ("--tls-ca", "--tls-cert", "--tls-key", "--api-key", "LLMSERVE_API_KEY"):
                self.assertIn(flag, out, "%s --help lacks %s" % (name, flag))
            rc, _, err = run([path, "--bogus"])
            self.assertEqual(rc, 2)
            self.assertIn("--bogus", err)
            words = ["hello"] if name == "llmctl" else []
            rc, _, err = run([path, "--tls-ca", "/nonexistent/ca.pem"] + words)
            self.assertEqual(rc, 2, err)
            self.assertIn("/nonexistent/ca.pem", err)

    def test_api_key_from_the_environment_is_never_shown(self):
        env = clean_env(LLMSERVE_API_KEY="hidden-key-material-0123456789")
        for name, path in TOOLS.items():
            rc, out, err = run([path, "--help"], env=env)
            self.assertEqual(rc, 0)
            self.assertNotIn("hidden-key-material", out + err)
            # A failing run reports its problem, not the key.
            rc, out, err = run([path, "--router", "127.0.0.1:1", "--requests", "1",
                                "--streams", "1", "--no-progress"] if name == "llmbench" else
                               [path, "--router", "127.0.0.1:1", "--timeout-ms", "300", "hi"],
                               env=env)
            self.assertIn(rc, (1, 3), "%s: %s" % (name, err))
            self.assertIn("127.0.0.1:1", err)
            self.assertNotIn("hidden-key-material", out + err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
