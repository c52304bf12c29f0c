#!/usr/bin/python3
"""How fast the suite follows Consul, under load: the time from a new inference instance
passing its Consul check to the first request the router sends it, and from SIGTERM on
an instance to the last request sent to it (and to its deregistration).

    python3 tools/consulbench.py [--build build] [--rounds 10] [--check-interval-ms 1000]

Runs the real processes on loopback against the stand-in agent (tests/consul/standin.py:
a real agent behaves the same for these paths: its check, its blocking queries), with the
scenario code of tests/python/test_consul.py: one instance always up, a router in Consul
mode, two client threads calling Router.Complete without pause, and per round a second
instance that starts, passes, takes traffic and is stopped with SIGTERM.  The check
interval bounds the first figure from below only through "passing": the clock starts
when the agent reports the instance passing.  Needs a build with the router_models
fixture made (ctest -R router_models) or makes the models itself.
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup_env(build):
    b = os.path.abspath(build)
    env = {
        "LLMSERVE_ROUTER_BIN": b + "/services/router/llmserve-router",
        "LLMSERVE_INFERENCE_BIN": b + "/services/inference/llmserve-inference",
        "LLMSERVE_CACHE_BIN": b + "/services/cache/llmserve-cache",
        "LLMSERVE_METRICS_BIN": b + "/services/metrics/llmserve-metrics",
        "LLMSERVE_MEMCACHED": "/usr/bin/memcached",
        "LLMSERVE_ROUTER_MODELS": b + "/router-models",
        "LLMSERVE_LOG_LEVEL": "warn",
    }
    for k, v in env.items():
        os.environ.setdefault(k, v)
    models = os.environ["LLMSERVE_ROUTER_MODELS"]
    if not os.path.exists(os.path.join(models, "small.bin")):
        os.makedirs(models, exist_ok=True)
        subprocess.check_call([b + "/tools/modelmaker/llmserve-modelmaker", "--preset", "tiny",
                               "--seed", "1", "--out", models + "/small.bin",
                               "--tokenizer-out", models + "/tok.bin"])
    sys.path[:0] = [os.path.join(ROOT, "tests", "python"), b + "/gen-python-llmserve"]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--check-interval-ms", type=int, default=1000)
    args = ap.parse_args()
    setup_env(args.build)
    import test_consul  # after sys.path is set

    flags = test_consul.CONSUL_FLAGS
    i = flags.index("--consul-check-interval-ms")
    flags[i + 1] = str(args.check_interval_ms)

    suite = test_consul.ConsulSuite("test_scale_out_and_in_under_load")
    suite.setUp()
    first, gone, last = [], [], []
    requests = errors = 0
    try:
        suite.agent = test_consul.Agent()
        _, a = suite.inference()
        suite.router()
        suite.wait_routed(a)
        load = test_consul.Load(suite.complete, n=2)
        try:
            for r in range(args.rounds):
                t_start = time.monotonic()  # a port may be one an earlier round had
                p, b = suite.inference(grace_ms=3000)
                t_pass = suite.agent.wait_passing("llmserve-inference", b, timeout=60)
                t_first = load.first_on("127.0.0.1:%d" % b, after=t_start)
                time.sleep(0.3)
                t_term = time.monotonic()
                p.send_signal(signal.SIGTERM)
                t_gone = suite.agent.wait("deregistered", lambda: all(
                    s["Port"] != b for s in suite.agent.services().values()), 10)
                p.wait(30)
                suite.processes.remove(p)
                time.sleep(0.5)
                sent = [t0 for t0, _, inst, _ in load.snapshot()
                        if inst == "127.0.0.1:%d" % b and t0 >= t_start]
                first.append((t_first - t_pass) * 1000)
                gone.append((t_gone - t_term) * 1000)
                last.append((max(sent) - t_term) * 1000)
                print("round %d: first request %.0f ms after passing; deregistered %.0f ms, "
                      "last request sent %.0f ms after SIGTERM"
                      % (r + 1, first[-1], gone[-1], last[-1]), flush=True)
        finally:
            results = load.stop()
        requests = len(results)
        errors = sum(1 for x in results if x[3] is not None)
    finally:
        suite.tearDown()
    print()
    print("rounds %d, requests %d, errors %d, check interval %d ms"
          % (args.rounds, requests, errors, args.check_interval_ms))
    for name, xs in (("passing -> first routed request", first),
                     ("SIGTERM -> deregistered", gone),
                     ("SIGTERM -> last request sent to it", last)):
        print("%-36s median %6.0f ms   p90 %6.0f ms   max %6.0f ms"
              % (name, statistics.median(xs), pct(xs, 0.9), max(xs)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
