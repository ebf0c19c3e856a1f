"""Traffic for the composed stack (threads of SDK clients) and Prometheus' HTTP API."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np

from services.client import Client, InferenceError

# The calls of the load: one per model, each returns nothing and raises on a wrong answer.
Call = Callable[[Client], None]


def model_calls(digits: np.ndarray, timeout_s: float | None = None) -> dict[str, Call]:
    """A valid request per model. digits: [N, 1, 28, 28] sample images. timeout_s: Triton's
    `timeout` parameter for the classifiers (the queue wait allowed beyond the config's default)."""
    params = {"timeout": int(timeout_s * 1e6)} if timeout_s else None

    def classify(model: str) -> Call:
        def call(client: Client) -> None:
            probs = client.infer(model, {"image": digits[:4]}, parameters=params)["probabilities"]
            assert probs.shape == (4, 10)
        return call

    def translate(client: Client) -> None:
        ((english, _),) = client.translate(["Ich habe keine Zeit."], beam_size=1)
        assert english.strip()

    def generate(client: Client) -> None:
        assert client.generate([1, 2], [3, 4]).shape == (2, 1, 28, 28)

    return {"mnist_mlp": classify("mnist_mlp"), "mnist_cnn": classify("mnist_cnn"),
            "translator_de_en": translate, "digit_gan": generate}


def bad_calls() -> dict[str, Call]:
    """A request per model that the gateway refuses as INVALID_ARGUMENT (for the error panels)."""
    wrong = np.zeros((1, 1, 27, 27), np.float32)  # 27 x 27: not the models' 28 x 28
    return {
        "mnist_mlp": lambda client: _discard(client.infer("mnist_mlp", {"image": wrong})),
        "mnist_cnn": lambda client: _discard(client.infer("mnist_cnn", {"image": wrong})),
        "translator_de_en": lambda client: _discard(client.translate(["Ja."], beam_size=0)),
        "digit_gan": lambda client: _discard(client.generate([10], [1])),  # digits are 0-9
    }


def _discard(_: object) -> None:
    return None


class Load:
    """`threads` clients calling `calls` round-robin until stopped; outcomes counted by status."""

    def __init__(self, url: str, calls: list[Call], threads: int = 8, timeout_s: float = 60.0) -> None:
        self.url, self.calls, self.threads, self.timeout_s = url, calls, threads, timeout_s
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads)
        self._futures: list[Any] = []

    def _worker(self, offset: int) -> None:
        with Client(self.url, timeout_s=self.timeout_s) as client:
            i = offset
            while not self._stop.is_set():
                call = self.calls[i % len(self.calls)]
                i += 1
                try:
                    call(client)
                    outcome = "OK"
                except InferenceError as err:
                    outcome = err.code.name
                    with self._lock:
                        self.errors.append(f"{err.code.name}: {err.message}")
                with self._lock:
                    self.outcomes[outcome] += 1

    def __enter__(self) -> Load:
        self._futures = [self._pool.submit(self._worker, i) for i in range(self.threads)]
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for future in self._futures:
            future.result(timeout=self.timeout_s + 30)
        self._pool.shutdown()


def run_all(url: str, calls: list[Call], timeout_s: float = 90.0) -> Counter[str]:
    """Each call once, all at the same time; outcomes by status."""
    outcomes: Counter[str] = Counter()

    def one(call: Call) -> str:
        with Client(url, timeout_s=timeout_s) as client:
            try:
                call(client)
                return "OK"
            except InferenceError as err:
                return err.code.name

    with ThreadPoolExecutor(len(calls)) as pool:
        outcomes.update(pool.map(one, calls))
    return outcomes


def expect_invalid(client: Client, call: Call) -> None:
    try:
        call(client)
    except InferenceError as err:
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT, err
        return
    raise AssertionError("a bad request was answered")


def prometheus_query(url: str, query: str) -> list[dict[str, Any]]:
    """The instant vector of a PromQL query (an error is an AssertionError with Prometheus' message)."""
    full = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(full, timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as err:
        body = json.loads(err.read())
    assert body["status"] == "success", f"{query!r}: {body.get('error')}"
    return list(body["data"]["result"])


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
