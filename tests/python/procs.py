"""What the Python tests share: real processes of the suite started and stopped as the
C tests do (tests/support/proc.c): a service prints "LISTENING port=N" once bound and
"SERVING" once ready; memcached on a free loopback port; the environment ctest sets.
"""
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time


def env(name):
    """The path ctest put in the environment variable name (else the test cannot run)."""
    v = os.environ.get(name)
    if not v:
        raise RuntimeError("%s is not set (run through ctest)" % name)
    return v


def read_serving(proc, timeout, ports=None):
    """Reads proc's stdout until 'LISTENING port=N' and then 'SERVING'; returns N.
    Other 'NAME port=N' lines before it (the collector's 'HTTP port=N') go into the
    dict ports, when given, as ports[NAME] = N."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf, port = b"", None
    deadline = time.monotonic() + timeout
    try:
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace").strip()
                if text.startswith("LISTENING port="):
                    port = int(text.split("=", 1)[1])
                elif ports is not None and " port=" in text and " " not in text.split(" port=")[0]:
                    name, value = text.split(" port=", 1)
                    if value.isdigit():
                        ports[name] = int(value)
                elif text == "SERVING" and port:
                    return port
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("no LISTENING and SERVING lines within %.0f s" % timeout)
            if sel.select(left):
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError("process exited before SERVING (rc=%s, output %r)"
                                       % (proc.wait(5), buf))
                buf += chunk
    finally:
        sel.close()


def drain(stream):
    """Keeps a process's stdout pipe empty so that it never blocks on a write."""
    try:
        while os.read(stream.fileno(), 4096):
            pass
    except OSError:
        pass


def start(argv, procs, timeout=60, ports=None, env=None):
    """Starts a service, appends it to procs, waits until it serves; returns its port
    (other ports it prints go into ports, see read_serving).  env: the process's whole
    environment (None: this one's)."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0,
                         env=env)
    procs.append(p)
    port = read_serving(p, timeout, ports)
    threading.Thread(target=drain, args=(p.stdout,), daemon=True).start()
    return port


def stop_all(procs, must_exit_0=None):
    """SIGTERM to each process, last started first; returns a failure message for each
    process must_exit_0(proc) names that did not exit with status 0."""
    failures = []
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                rc = "timeout"
        else:
            rc = p.returncode
        if p.stdout:
            p.stdout.close()
        if rc != 0 and (must_exit_0 is None or must_exit_0(p)):
            failures.append("%s exited with %s after SIGTERM, want 0"
                            % (os.path.basename(p.args[0]), rc))
    del procs[:]
    return failures


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_memcached():
    """A real memcached on a free loopback port; returns (process, port)."""
    port = free_port()
    argv = [env("LLMSERVE_MEMCACHED"), "-l", "127.0.0.1", "-p", str(port), "-U", "0"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return p, port
        except OSError:
            time.sleep(0.01)
    p.kill()
    p.wait()
    raise RuntimeError("memcached did not start on port %d" % port)


def stop_suite(owner, must_exit_0=None):
    """A test class's teardown: closes owner.channel, stops owner.processes (stop_all)
    and owner.memcached, each if there; raises AssertionError for a process that
    must_exit_0 names and did not exit 0."""
    if getattr(owner, "channel", None) is not None:
        owner.channel.close()
    failures = stop_all(owner.processes, must_exit_0)
    if getattr(owner, "memcached", None) is not None:
        owner.memcached.terminate()
        owner.memcached.wait(10)
    if failures:
        raise AssertionError("; ".join(failures))


def watchdog(name, seconds, processes):
    """Starts a timer that, past seconds, kills every process still in the list processes
    (read then; None entries are skipped) and exits 1, so that a hung test cannot hang CI."""
    def fire():
        sys.stderr.write("%s: watchdog: no result after %.0f s\n" % (name, seconds))
        for p in processes:
            if p is not None and p.poll() is None:
                p.kill()
        os._exit(1)
    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


def inference_calls(channel):
    """Inference.Generate (stream-stream) and Inference.Info (unary) callables on channel;
    the generated llmserve.v1 Python modules must be on PYTHONPATH."""
    from llmserve.v1 import inference_pb2
    generate = channel.stream_stream(
        "/llmserve.v1.Inference/Generate",
        request_serializer=inference_pb2.InferenceRequest.SerializeToString,
        response_deserializer=inference_pb2.InferenceEvent.FromString)
    info = channel.unary_unary(
        "/llmserve.v1.Inference/Info",
        request_serializer=inference_pb2.InfoRequest.SerializeToString,
        response_deserializer=inference_pb2.InfoResponse.FromString)
    return generate, info


def router_calls(channel):
    """Router.Generate (stream-stream) and Router.Complete (unary) callables on channel;
    the generated llmserve.v1 Python modules (protoc --python_out) must be on PYTHONPATH."""
    from llmserve.v1 import router_pb2
    generate = channel.stream_stream(
        "/llmserve.v1.Router/Generate",
        request_serializer=router_pb2.GenerateRequest.SerializeToString,
        response_deserializer=router_pb2.GenerateEvent.FromString)
    complete = channel.unary_unary(
        "/llmserve.v1.Router/Complete",
        request_serializer=router_pb2.CompleteRequest.SerializeToString,
        response_deserializer=router_pb2.CompleteResponse.FromString)
    return generate, complete
