#!/usr/bin/python3
"""Inference.Embed called from Python, as a user in another language would.

Makes a tiny model with llmserve-modelmaker, starts the real llmserve-inference on it and
calls Embed with Debian's python3-grpcio and modules generated from proto/llmserve/v1 by
protoc --python_out.  The weights are random: this checks the contract (dim, unit norm,
same floats whatever the batch, status codes), not whether the vectors mean anything.
Run through ctest (tests/inference.cmake), which sets the binary paths and PYTHONPATH.
"""
import math
import os
import subprocess
import tempfile
import unittest

import grpc

import procs
from procs import env as _env

from llmserve.v1 import inference_pb2

CALL_TIMEOUT_S = 30.0


class EmbedFromPython(unittest.TestCase):
    processes = []

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory(prefix="llmserve-embed-py-")
        model = os.path.join(cls.dir.name, "model.bin")
        tok = os.path.join(cls.dir.name, "tok.bin")
        subprocess.run([_env("LLMSERVE_MODELMAKER_BIN"), "--preset", "tiny", "--out", model,
                        "--tokenizer-out", tok], check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
        port = procs.start([_env("LLMSERVE_INFERENCE_BIN"), "--listen", "127.0.0.1:0",
                            "--model", model, "--tokenizer", tok, "--model-name", "tiny",
                            "--cpu-threads", "1", "--grace-ms", "500"], cls.processes)
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % port,
                                            options=[("grpc.enable_http_proxy", 0)])
        _, cls.info = procs.inference_calls(cls.channel)
        cls.embed = cls.channel.unary_unary(
            "/llmserve.v1.Inference/Embed",
            request_serializer=inference_pb2.EmbedRequest.SerializeToString,
            response_deserializer=inference_pb2.EmbedResponse.FromString)

    @classmethod
    def tearDownClass(cls):
        try:
            procs.stop_suite(cls)
        finally:
            cls.dir.cleanup()

    def call(self, texts, model=""):
        return self.embed(inference_pb2.EmbedRequest(model=model, texts=texts),
                          timeout=CALL_TIMEOUT_S)

    def code_of(self, texts, model=""):
        with self.assertRaises(grpc.RpcError) as cm:
            self.call(texts, model)
        return cm.exception.code(), cm.exception.details()

    def test_dim_norm_and_model(self):
        info = self.info(inference_pb2.InfoRequest(), timeout=CALL_TIMEOUT_S)
        r = self.call(["once upon a time", "the dog"])
        self.assertEqual(r.model, "tiny")
        self.assertEqual(r.dim, info.dim)
        self.assertEqual(len(r.embeddings), 2)
        for e in r.embeddings:
            self.assertEqual(len(e.values), info.dim)
            self.assertAlmostEqual(math.sqrt(sum(v * v for v in e.values)), 1.0, places=5)
            self.assertGreater(e.tokens, 0)
        self.assertNotEqual(list(r.embeddings[0].values), list(r.embeddings[1].values))

    def test_same_floats_alone_and_in_a_batch(self):
        alone = list(self.call(["the cat sat"]).embeddings[0].values)
        batch = ["x", "a b c", "the cat sat", "hello"] * 8
        r = self.call(batch)
        for i, text in enumerate(batch):
            if text == "the cat sat":
                self.assertEqual(list(r.embeddings[i].values), alone, "position %d" % i)

    def test_errors(self):
        code, details = self.code_of([])
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        code, details = self.code_of(["ok", ""])
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn("texts[1] is empty", details)
        code, details = self.code_of(["hi"] * 257)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        code, details = self.code_of(["word " * 400])
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        code, details = self.code_of(["hi"], model="large")
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND, details)
        self.assertEqual(self.call(["hi"], model="tiny").dim, 64)


if __name__ == "__main__":
    unittest.main(verbosity=2)
