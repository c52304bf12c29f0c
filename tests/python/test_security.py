#!/usr/bin/python3
"""The router's TLS and API keys from Python (python3-grpcio), as a user in another
language meets them: the suite (memcached, llmserve-cache, one inference instance, the
router) with mutual TLS between the services and TLS plus an API key file on the router;
certificates made with openssl at test time.

Checks: no key, a wrong key and the right one; a tenant-bound key that must miss another
tenant's cached answer; the key file reloaded on SIGHUP; a malformed file that keeps the
keys in use; plaintext against the TLS port; health without a key.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import grpc

import procs
from procs import env as _env

from llmserve.v1 import common_pb2, router_pb2

HEALTH = "/grpc.health.v1.Health/Check"
KEY_OPS = "py-ops-key-0123456789abcdef"
KEY_B = "py-tenant-b-key-0123456789ab"
KEY_C = "py-tenant-c-key-0123456789ab"
KEY_NEW = "py-rotated-key-0123456789abc"


def _make_certs(d):
    """tools/make-certs.sh, as the quickstart and the C tests use it."""
    subprocess.run(["bash", _env("LLMSERVE_MAKE_CERTS"), d, "--days", "2"], check=True)


class SecureRouterFromPython(unittest.TestCase):
    processes = []

    @classmethod
    def start(cls, argv):
        return procs.start(argv, cls.processes)

    @classmethod
    def write_keys(cls, text):
        tmp = cls.keys + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.rename(tmp, cls.keys)

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="llmserve-pysec-")
        _make_certs(cls.dir)
        p = lambda name: os.path.join(cls.dir, name)
        cls.keys = p("api-keys")
        cls.write_keys("%s\n%s tenant-b\n%s tenant-c\n" % (KEY_OPS, KEY_B, KEY_C))
        models = _env("LLMSERVE_ROUTER_MODELS")
        cls.memcached, mc_port = procs.start_memcached()
        mtls = ["--tls-cert", p("server.pem"), "--tls-key", p("server.key"),
                "--tls-client-ca", p("ca.pem")]
        try:
            cache = cls.start([_env("LLMSERVE_CACHE_BIN"), "--listen", "127.0.0.1:0",
                               "--memcached", "--SERVER=127.0.0.1:%d" % mc_port] + mtls)
            small = cls.start([_env("LLMSERVE_INFERENCE_BIN"), "--listen", "127.0.0.1:0",
                               "--model", os.path.join(models, "small.bin"),
                               "--tokenizer", os.path.join(models, "tok.bin"),
                               "--pool", "small", "--cpu-threads", "1", "--grace-ms", "500"]
                              + mtls)
            cls.router_proc = len(cls.processes)
            cls.router = cls.start([
                _env("LLMSERVE_ROUTER_BIN"), "--listen", "127.0.0.1:0",
                "--pool", "small=127.0.0.1:%d" % small, "--tiers", "",
                "--cache", "127.0.0.1:%d" % cache, "--grace-ms", "500",
                "--tls-cert", p("server.pem"), "--tls-key", p("server.key"),
                "--upstream-tls-ca", p("ca.pem"), "--upstream-tls-cert", p("client.pem"),
                "--upstream-tls-key", p("client.key"), "--api-keys", cls.keys])
        except Exception:
            cls.tearDownClass()
            raise
        with open(p("ca.pem"), "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        cls.channel = grpc.secure_channel("localhost:%d" % cls.router, creds,
                                          options=[("grpc.enable_http_proxy", 0)])
        cls.generate, cls.complete = procs.router_calls(cls.channel)

    @classmethod
    def tearDownClass(cls):
        try:
            procs.stop_suite(cls)
        finally:
            shutil.rmtree(cls.dir, ignore_errors=True)

    def ask(self, key, rid, tenant="", policy=common_pb2.CACHE_POLICY_DEFAULT,
            prompt="Once upon a time"):
        """One greedy request; returns (events, None) or ([], grpc status code)."""
        req = router_pb2.GenerateRequest(submit=router_pb2.GenerateSubmit(
            request_id=rid, prompt=prompt, tenant=tenant, cache_policy=policy,
            sampling=common_pb2.SamplingParams(max_tokens=8)))
        md = [("authorization", "Bearer " + key)] if key else []
        try:
            return list(self.generate(iter([req]), metadata=md, timeout=30)), None
        except grpc.RpcError as e:
            return [], e.code()

    @staticmethod
    def hit(events):
        return any(e.WhichOneof("kind") == "started" and e.started.cache_hit for e in events)

    def wait_key(self, key, want_ok):
        for i in range(100):
            evs, code = self.ask(key, "wait-%d" % i)
            ok = bool(evs) and evs[-1].WhichOneof("kind") == "done"
            if want_ok and ok:
                return True
            if not want_ok and code == grpc.StatusCode.UNAUTHENTICATED:
                return True
            time.sleep(0.05)
        return False

    def test_01_no_wrong_and_right_key(self):
        evs, code = self.ask(None, "none")
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        evs, code = self.ask("wrong-key-0123456789abcdef", "wrong")
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        evs, code = self.ask(KEY_OPS, "right")
        self.assertIsNone(code)
        self.assertEqual(evs[-1].WhichOneof("kind"), "done")
        self.assertEqual(sum(e.WhichOneof("kind") == "token" for e in evs), 8)
        with self.assertRaises(grpc.RpcError) as cm:
            self.complete(router_pb2.CompleteRequest(request=router_pb2.GenerateSubmit(
                prompt="Hello")), timeout=30)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertNotIn(KEY_OPS, cm.exception.details())
        resp = self.complete(router_pb2.CompleteRequest(request=router_pb2.GenerateSubmit(
            prompt="Hello", sampling=common_pb2.SamplingParams(max_tokens=4))),
            metadata=[("authorization", "Bearer " + KEY_OPS)], timeout=30)
        self.assertEqual(resp.usage.completion_tokens, 4)

    def test_02_health_needs_no_key(self):
        check = self.channel.unary_unary(HEALTH, request_serializer=lambda b: b,
                                         response_deserializer=lambda b: b)
        self.assertEqual(check(b"", timeout=10), b"\x08\x01")  # status: SERVING

    def test_03_plaintext_against_the_tls_port_fails(self):
        ch = grpc.insecure_channel("127.0.0.1:%d" % self.router,
                                   options=[("grpc.enable_http_proxy", 0)])
        gen, _ = procs.router_calls(ch)
        with self.assertRaises(grpc.RpcError) as cm:
            list(gen(iter([]), metadata=[("authorization", "Bearer " + KEY_OPS)], timeout=5))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        ch.close()
        self.assertTrue(self.wait_key(KEY_OPS, True), "the router stopped serving")

    def test_04_a_tenant_bound_key_misses_another_tenants_answer(self):
        prompt = "Python tenant b keeps this answer"
        evs, code = self.ask(KEY_B, "b-store", prompt=prompt)
        self.assertIsNone(code)
        peek = common_pb2.CACHE_POLICY_READ_ONLY
        seen = False
        for i in range(50):
            evs, _ = self.ask(KEY_OPS, "ops-%d" % i, tenant="tenant-b", policy=peek,
                              prompt=prompt)
            if self.hit(evs):
                seen = True
                break
            time.sleep(0.1)
        self.assertTrue(seen, "the answer is not under tenant-b")
        evs, _ = self.ask(KEY_C, "c-as-b", tenant="tenant-b", policy=peek, prompt=prompt)
        self.assertFalse(self.hit(evs), "tenant c read tenant b's answer")
        evs, _ = self.ask(KEY_B, "b-again", tenant="other", policy=peek, prompt=prompt)
        self.assertTrue(self.hit(evs), "tenant b's key reads its own answer")

    def test_05_sighup_reloads_and_a_malformed_file_keeps_the_keys(self):
        router = self.processes[self.router_proc]
        try:
            self.write_keys("%s\n%s tenant-b\n" % (KEY_NEW, KEY_B))
            router.send_signal(signal.SIGHUP)
            self.assertTrue(self.wait_key(KEY_NEW, True), "the new key was not taken")
            self.assertTrue(self.wait_key(KEY_OPS, False), "the revoked key still works")
            self.write_keys("# a stray field makes it malformed\n%s tenant-b extra\n" % KEY_OPS)
            router.send_signal(signal.SIGHUP)
            time.sleep(0.3)
            self.assertTrue(self.wait_key(KEY_NEW, True), "a malformed file dropped the keys")
            self.assertTrue(self.wait_key(KEY_OPS, False), "a malformed file let its key in")
            self.assertIsNone(router.poll(), "the router carries on")
        finally:
            self.write_keys("%s\n%s tenant-b\n%s tenant-c\n" % (KEY_OPS, KEY_B, KEY_C))
            router.send_signal(signal.SIGHUP)
            self.wait_key(KEY_OPS, True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
