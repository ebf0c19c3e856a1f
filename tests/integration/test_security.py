"""Locked down: TLS and mutual TLS on the gateway, API keys with reflection off, a Redis that
requires a password, and no secret in any log."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.proto import grpc_service_pb2_grpc
import tensorgate
from tests.certs import make_certs
from tests.integration.test_gateway import infer_request
from tests.support import RedisServer, ServiceProcess, make_tiny_repository, start_gateway, start_model_service

pytestmark = pytest.mark.integration

API_KEY = "k-3f9c1e7a-secret"
REDIS_PASSWORD = "r-8d2b44c0-secret"
IMAGE = np.full((1, 1, 28, 28), 0.5, np.float32)


def infer(channel: grpc.Channel, key: str | None = API_KEY) -> grpc.StatusCode:
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    try:
        stub.ModelInfer(infer_request(IMAGE), timeout=10,
                        metadata=[("authorization", f"Bearer {key}")] if key is not None else None)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_tls_mtls_api_keys_and_redis_password(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    repo = make_tiny_repository(tmp_path / "models", "mnist_mlp")
    redis = RedisServer(tmp_path / "redis", password=REDIS_PASSWORD)
    model = start_model_service(repo, "mnist_mlp", redis.url, tmp_path)
    tls = {"tls_cert_file": str(certs.server_cert), "tls_key_file": str(certs.server_key),
           "tls_client_ca_file": str(certs.ca), "api_keys": f'["{API_KEY}"]'}
    gateway = start_gateway(repo, redis.url, tmp_path, **tls)
    try:
        model.wait_serving()
        wait_port_accepts(gateway)
        root = certs.ca.read_bytes()
        client = grpc.ssl_channel_credentials(root, certs.client_key.read_bytes(), certs.client_cert.read_bytes())
        address = f"localhost:{gateway.grpc_port}"
        with grpc.secure_channel(address, client) as channel:
            deadline = time.monotonic() + 30
            while infer(channel) != grpc.StatusCode.OK and time.monotonic() < deadline:
                time.sleep(0.2)  # until the model's replica is seen
            assert infer(channel) == grpc.StatusCode.OK
            assert infer(channel, key=None) == grpc.StatusCode.UNAUTHENTICATED
            assert infer(channel, key="wrong") == grpc.StatusCode.UNAUTHENTICATED
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            with pytest.raises(grpc.RpcError) as info:  # reflection is off while API keys are on
                list(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                  timeout=5))
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # mTLS: no client certificate, or one from another CA: the handshake is refused.
        for creds in (grpc.ssl_channel_credentials(root),
                      grpc.ssl_channel_credentials(root, certs.stranger_key.read_bytes(), certs.stranger_cert.read_bytes())):
            with grpc.secure_channel(address, creds) as channel:
                assert infer(channel) == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(address) as channel:  # plain text on a TLS port
            assert infer(channel) == grpc.StatusCode.UNAVAILABLE
        # The SDK and the CLI with the matching options.
        with tensorgate.Client(address, api_key=API_KEY, root_certificates=certs.ca, certificate_chain=certs.client_cert,
                               private_key=certs.client_key, retries=0) as client:
            out = client.infer("mnist_mlp", {"image": IMAGE})
            assert out["probabilities"].shape == (1, 10)
        with tensorgate.Client(address, api_key=API_KEY, root_certificates=certs.ca, retries=0) as client:
            with pytest.raises(tensorgate.InferenceError) as refused:  # no client certificate
                client.infer("mnist_mlp", {"image": IMAGE}, timeout_s=5)
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        cli = subprocess.run([sys.executable, "-m", "tensorgate", "models", "--url", address, "--api-key", API_KEY,
                              "--ca-cert", str(certs.ca), "--cert", str(certs.client_cert), "--key", str(certs.client_key)],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0 and "mnist_mlp" in cli.stdout, cli.stderr
    finally:
        gateway.stop()
        model.stop()
        redis.stop()
    for log in (gateway.log, model.log):  # secrets never reach a log
        text = log.read_text()
        assert API_KEY not in text and REDIS_PASSWORD not in text, log


def test_services_refuse_to_start_without_the_redis_password(tmp_path: Path) -> None:
    repo = make_tiny_repository(tmp_path / "models", "mnist_mlp")
    redis = RedisServer(tmp_path / "redis", password=REDIS_PASSWORD)
    no_password = redis.url.replace(f":{REDIS_PASSWORD}@", "")
    try:
        for process in (start_model_service(repo, "mnist_mlp", no_password, tmp_path),
                        start_gateway(repo, no_password, tmp_path)):
            assert process.process.wait(timeout=60) != 0
            text = process.log.read_text()
            process.stop()
            assert "Authentication required" in text or "NOAUTH" in text or "AuthenticationError" in text, text[-2000:]
    finally:
        redis.stop()


def wait_port_accepts(process: ServiceProcess, timeout_s: float = 60.0) -> None:
    """A TLS port cannot be health-checked in plain text: wait until it accepts connections."""
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(process.log.read_text()[-3000:])
        try:
            socket.create_connection(("127.0.0.1", process.grpc_port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(process.log.read_text()[-3000:])


def test_server_metadata_still_answers_over_tls(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    repo = make_tiny_repository(tmp_path / "models", "mnist_mlp")
    redis = RedisServer(tmp_path / "redis")
    gateway = start_gateway(repo, redis.url, tmp_path, tls_cert_file=str(certs.server_cert),
                            tls_key_file=str(certs.server_key))
    try:
        wait_port_accepts(gateway)
        with grpc.secure_channel(f"localhost:{gateway.grpc_port}", grpc.ssl_channel_credentials(certs.ca.read_bytes())) as ch:
            stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(ch)
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live  # TLS without client certificates
    finally:
        gateway.stop()
        redis.stop()
