"""Models that come, update and go while the stack keeps serving (issue 14, part 2), with real
processes: a model service started after the gateway, a new version dropped into the repository
under load, RepositoryModelLoad / Unload through the gateway, version_policy and named versions.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.proto import grpc_service_pb2_grpc
from tensorgate.tensors import add_input, response_outputs
from tests.support import (RedisServer, ServiceProcess, make_tiny_repository, scrape, start_gateway,
                           start_model_service, start_stack, tiny_mnist_graph)

pytestmark = pytest.mark.integration

IMAGES = np.random.default_rng(7).random((8, 1, 28, 28), dtype=np.float32)
FAST = {"replica_ttl_s": "1.5"}  # the gateway forgets a silent replica quickly


def request(model: str, version: str = "", rows: slice = slice(0, 1)) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=model, model_version=version)
    add_input(message, "image", IMAGES[rows])
    return message


def expected(seed: int, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(tiny_mnist_graph(seed).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"image": images})[0]


def add_version(repo: Path, model: str, version: str, seed: int) -> None:
    """Drop a version folder in whole (written aside, then renamed), as a deployment would."""
    staging = repo / f".{model}-{version}"
    staging.mkdir()
    onnx.save(tiny_mnist_graph(seed), str(staging / "model.onnx"))
    staging.rename(repo / model / version)


def set_policy(repo: Path, model: str, policy: str) -> None:
    config = repo / model / "config.pbtxt"
    config.write_text(config.read_text() + f"version_policy {{ {policy} }}\n")


def wait_until(check: Callable[[], bool], timeout_s: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s}s: {what}")


@dataclass
class Live:
    tmp: Path
    repo: Path
    redis: RedisServer
    gateway: ServiceProcess
    services: list[ServiceProcess] = field(default_factory=list)
    channel: grpc.Channel | None = None

    @property
    def stub(self) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
        if self.channel is None:
            self.channel = grpc.insecure_channel(f"127.0.0.1:{self.gateway.grpc_port}")
        return grpc_service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def start_service(self, model: str, **env: str) -> ServiceProcess:
        service = start_model_service(self.repo, model, self.redis.url, self.tmp, **env)
        self.services.append(service)
        service.wait_serving()
        return service

    def index(self) -> dict[tuple[str, str], tuple[str, str]]:
        response = self.stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=5)
        return {(m.name, m.version): (m.state, m.reason) for m in response.models}

    def served(self, model: str) -> bool:
        try:
            self.stub.ModelInfer(request(model), timeout=5)
            return True
        except grpc.RpcError:
            return False


@contextmanager
def live(tmp_path: Path, gateway_repo: Path | None = None) -> Iterator[Live]:
    """Redis and a gateway; a repository the test fills; model services started by the test."""
    repo = tmp_path / "models"
    repo.mkdir()
    redis = RedisServer(tmp_path / "redis")
    # The gateway's own repository is a folder of its own (empty unless the test says): what it
    # serves comes from the replicas' announcements.
    empty = gateway_repo or tmp_path / "gateway-models"
    empty.mkdir(exist_ok=True)
    gateway = start_gateway(empty, redis.url, tmp_path, **FAST)
    state = Live(tmp_path, repo, redis, gateway)
    try:
        gateway.wait_serving()
        yield state
    finally:
        if state.channel is not None:
            state.channel.close()
        gateway.stop()
        for service in state.services:
            service.stop()
        redis.stop()


def test_a_model_service_started_after_the_gateway_is_served_without_a_restart(tmp_path: Path) -> None:
    with live(tmp_path) as stack:
        with pytest.raises(grpc.RpcError) as err:
            stack.stub.ModelInfer(request("late_model"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        make_tiny_repository(stack.repo, "late_model")
        service = stack.start_service("late_model")
        wait_until(lambda: stack.served("late_model"), what="the gateway serves a model added after it started")
        response = stack.stub.ModelInfer(request("late_model", rows=slice(0, 3)), timeout=5)
        np.testing.assert_allclose(response_outputs(response)["probabilities"], expected(0, IMAGES[:3]), atol=1e-6)
        assert response.model_version == "1"
        assert stack.index() == {("late_model", "1"): ("READY", "")}
        meta = stack.stub.ModelMetadata(pb.ModelMetadataRequest(name="late_model"), timeout=5)
        assert list(meta.versions) == ["1"] and meta.inputs[0].name == "image"
        config = stack.stub.ModelConfig(pb.ModelConfigRequest(name="late_model"), timeout=5).config
        assert config.max_batch_size == 64
        # Its last replica gone, the model is gone too: NOT_FOUND, not a wait.
        service.stop()
        wait_until(lambda: "late_model" not in {name for name, _ in stack.index()}, what="the model leaves the index")
        with pytest.raises(grpc.RpcError) as err:
            stack.stub.ModelInfer(request("late_model"), timeout=5)
        assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)


def test_a_new_version_under_load_fails_no_request_and_later_ones_get_it(tmp_path: Path) -> None:
    with live(tmp_path) as stack:
        make_tiny_repository(stack.repo, "hot")
        for _ in range(2):  # every replica loads the new version on its own
            stack.start_service("hot", repository_poll_s="0.2")
        wait_until(lambda: stack.served("hot"), what="served")
        # (sent, version, result) per request; the clients run until told to stop.
        outcomes: list[tuple[float, str, np.ndarray | grpc.StatusCode]] = []
        lock = threading.Lock()
        switched, stop = threading.Event(), threading.Event()

        def client(n: int) -> None:
            stub = stack.stub
            i = 0
            while not stop.is_set():
                rows = slice(i % 8, i % 8 + 1)
                sent = time.monotonic()
                try:
                    response = stub.ModelInfer(request("hot", rows=rows), timeout=20)
                    result: np.ndarray | grpc.StatusCode = response_outputs(response)["probabilities"]
                    version = response.model_version
                except grpc.RpcError as err:
                    result, version = err.code(), ""
                with lock:
                    outcomes.append((sent, version, result))
                if i == 8 and n == 0:
                    add_version(stack.repo, "hot", "2", seed=1)  # mid-load
                    switched.set()
                i += 1
                time.sleep(0.03)

        with ThreadPoolExecutor(8) as pool:
            clients = [pool.submit(client, n) for n in range(8)]
            try:
                assert switched.wait(20), "the load did not reach the switch"
                # Each replica polls and loads on its own, so for a while one may answer with
                # version 1 and the other with 2. A replica announces its versions after it swaps
                # them, so once the gateway's index has only version 2, every replica has swapped.
                wait_until(lambda: stack.index() == {("hot", "2"): ("READY", "")}, what="version 1 retired everywhere")
                swapped = time.monotonic()
                time.sleep(0.5)  # load on version 2 alone
            finally:
                stop.set()
            for done in clients:
                done.result()
        failures = [r for _, _, r in outcomes if isinstance(r, grpc.StatusCode)]
        assert failures == []
        versions = [v for _, v, _ in sorted(outcomes, key=lambda o: o[0])]
        assert versions[0] == "1" and "2" in versions
        # Every request sent after every replica swapped got version 2, and the replicas kept serving.
        after = [v for sent, v, _ in outcomes if sent > swapped]
        assert len(after) >= 8 and set(after) == {"2"}
        # What version 2 answers is version 2's graph.
        later = stack.stub.ModelInfer(request("hot", rows=slice(0, 4)), timeout=5)
        assert later.model_version == "2"
        np.testing.assert_allclose(response_outputs(later)["probabilities"], expected(1, IMAGES[:4]), atol=1e-6)
        # Statistics and metrics carry the version.
        stats = stack.stub.ModelStatistics(pb.ModelStatisticsRequest(name="hot", version="2"), timeout=5)
        assert stats.model_stats[0].version == "2" and stats.model_stats[0].inference_count >= 4
        ones = stack.stub.ModelStatistics(pb.ModelStatisticsRequest(name="hot", version="1"), timeout=5)
        assert ones.model_stats[0].inference_count >= 9
        samples = {}
        for service in stack.services:
            samples.update({k: v for k, v in scrape(service.metrics_port).items() if k.startswith("tensorgate_batch_size_count")})
        assert any('version="2"' in k for k in samples) and any('version="1"' in k for k in samples)


def test_a_broken_new_version_leaves_the_served_one_serving_and_says_why(tmp_path: Path) -> None:
    with live(tmp_path) as stack:
        make_tiny_repository(stack.repo, "keep")  # latest 1: version 2 would replace version 1
        stack.start_service("keep", repository_poll_s="0.2")
        wait_until(lambda: stack.served("keep"), what="served")
        (stack.repo / "keep" / "2").mkdir()
        (stack.repo / "keep" / "2" / "model.onnx").write_bytes(b"not an ONNX graph")
        wait_until(lambda: stack.index().get(("keep", "2"), ("", ""))[0] == "UNAVAILABLE",
                   what="the failed version in the gateway's index")
        state, reason = stack.index()[("keep", "2")]
        assert "failed to load" in reason and "INVALID_PROTOBUF" in reason
        assert stack.index()[("keep", "1")] == ("READY", "")
        for _ in range(5):  # still served, by version 1
            assert stack.stub.ModelInfer(request("keep"), timeout=5).model_version == "1"


def test_load_and_unload_through_the_gateway_reach_every_replica(tmp_path: Path) -> None:
    with live(tmp_path) as stack:
        make_tiny_repository(stack.repo, "managed")
        for _ in range(2):
            stack.start_service("managed")  # no polling: only RepositoryModelLoad changes what it serves
        wait_until(lambda: stack.served("managed"), what="served")
        add_version(stack.repo, "managed", "2", seed=1)
        time.sleep(0.5)
        assert stack.stub.ModelInfer(request("managed"), timeout=5).model_version == "1"  # not polled
        stack.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="managed"), timeout=60)
        for _ in range(6):  # both replicas switched before the call returned
            assert stack.stub.ModelInfer(request("managed"), timeout=5).model_version == "2"
        # Unload: requests in flight finish, later ones are refused at once, no waiter is left.
        with ThreadPoolExecutor(4) as pool:
            during = [pool.submit(stack.stub.ModelInfer, request("managed"), timeout=10) for _ in range(8)]
            stack.stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="managed"), timeout=60)
            assert all(f.result().model_version == "2" for f in during)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stack.stub.ModelInfer(request("managed"), timeout=10)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)
        assert time.monotonic() - started < 2.0
        assert stack.index()[("managed", "2")] == ("UNAVAILABLE", "unloaded")
        assert scrape(stack.gateway.metrics_port)["tensorgate_reply_waiters"] == 0
        stack.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="managed"), timeout=60)
        assert stack.stub.ModelInfer(request("managed"), timeout=5).model_version == "2"
        # What cannot be done says so.
        with pytest.raises(grpc.RpcError) as err:
            stack.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="nobody"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            config = pb.ModelRepositoryParameter(string_param="{}")
            stack.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="managed", parameters={"config": config}),
                                           timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_version_policy_serves_several_versions_and_requests_name_theirs(tmp_path: Path) -> None:
    with live(tmp_path) as stack:
        make_tiny_repository(stack.repo, "multi")
        add_version(stack.repo, "multi", "2", seed=1)
        add_version(stack.repo, "multi", "3", seed=2)
        set_policy(stack.repo, "multi", "latest { num_versions: 2 }")
        service = stack.start_service("multi")
        wait_until(lambda: stack.served("multi"), what="served")
        assert stack.index() == {("multi", "2"): ("READY", ""), ("multi", "3"): ("READY", "")}
        for version, seed in (("2", 1), ("3", 2)):
            response = stack.stub.ModelInfer(request("multi", version, slice(0, 2)), timeout=5)
            assert response.model_version == version
            np.testing.assert_allclose(response_outputs(response)["probabilities"], expected(seed, IMAGES[:2]), atol=1e-6)
        assert stack.stub.ModelInfer(request("multi"), timeout=5).model_version == "3"  # none named: the newest
        with pytest.raises(grpc.RpcError) as err:
            stack.stub.ModelInfer(request("multi", "1"), timeout=5)  # not selected by the policy
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "no version 1" in (err.value.details() or "")
        ready = stack.stub.ModelReady(pb.ModelReadyRequest(name="multi", version="2"), timeout=5)
        assert ready.ready
        stats = stack.stub.ModelStatistics(pb.ModelStatisticsRequest(name="multi"), timeout=5)
        assert [s.version for s in stats.model_stats] == ["2", "3"]  # one entry per version, as Triton
        # The replica's own port answers the same, and takes the commands itself.
        direct = grpc_service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}"))
        assert direct.ModelInfer(request("multi", "2"), timeout=5).model_version == "2"
        names = {(m.version, m.state) for m in direct.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=5).models}
        assert names == {("2", "READY"), ("3", "READY")}
        shutil.rmtree(stack.repo / "multi" / "3")
        direct.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="multi"), timeout=30)
        names = {(m.version, m.state) for m in direct.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=5).models}
        assert names == {("1", "READY"), ("2", "READY")}  # latest 2 of what is left
        wait_until(lambda: stack.index() == {("multi", "1"): ("READY", ""), ("multi", "2"): ("READY", "")},
                   what="the gateway sees the new set")


def test_the_local_stack_joins_a_model_to_a_running_gateway(tmp_path: Path) -> None:
    with live(tmp_path) as stack:
        make_tiny_repository(stack.repo, "joined")
        command = [sys.executable, "-m", "services.stack", "--join", "--models", "joined", "--model-repository",
                   str(stack.repo), "--redis-port", str(stack.redis.port), "--state-dir", str(tmp_path / "joined-state")]
        process, lines = start_stack(command, timeout_s=60)
        try:
            assert any("joined the stack" in line for line in lines), "".join(lines)
            wait_until(lambda: stack.served("joined"), what="the running gateway serves the joined model")
        finally:
            process.send_signal(signal.SIGINT)
            rest, _ = process.communicate(timeout=30)
        assert process.returncode == 0, "".join(lines) + rest
        assert "stopped." in rest


def test_tritonclient_lists_unloads_and_loads_a_model(tmp_path: Path) -> None:
    with live(tmp_path) as stack:
        make_tiny_repository(stack.repo, "triton_managed")
        stack.start_service("triton_managed")
        wait_until(lambda: stack.served("triton_managed"), what="served")
        script = Path(__file__).with_name("triton_repository_check.py")
        out = subprocess.run([sys.executable, str(script), f"127.0.0.1:{stack.gateway.grpc_port}", "triton_managed"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
        assert seen["index"] == [{"name": "triton_managed", "version": "1", "state": "READY"}]
        assert seen["ready_after_unload"] is False
        assert seen["index_after_unload"] == [{"name": "triton_managed", "version": "1", "state": "UNAVAILABLE",
                                               "reason": "unloaded"}]
        assert seen["ready_after_load"] is True
        assert stack.served("triton_managed")
