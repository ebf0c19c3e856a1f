"""The local stack (services/stack.py, `make up`) assigns each model service the contract's
port pair, as compose does, also when only some of the models are there."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

import pytest

from services.stack import CONTRACT_MODELS, model_ports
from tests.unit.deploy_files import MODEL_PORTS


def test_stack_model_ports_follow_the_contract() -> None:
    every = ["zeta", "digit_gan", "alpha", "mnist_mlp", "translator_de_en", "mnist_cnn"]
    ports = model_ports(every, 8101, 9101)
    assert list(ports) == [*CONTRACT_MODELS, "alpha", "zeta"]  # start order: contract order, then the rest
    assert {name: ports[name] for name in MODEL_PORTS} == MODEL_PORTS
    assert ports["alpha"] == (8105, 9105) and ports["zeta"] == (8106, 9106)
    # The same table as compose with the default bases, and any other bases shift it as a whole.
    assert model_ports(every, 20000, 30000)["translator_de_en"] == (20002, 30002)


def test_stack_model_ports_keep_contract_slots_when_models_are_missing() -> None:
    # A repository with some of the contract's models: each keeps its own slot (no renumbering).
    assert model_ports(["mnist_mlp"], 8101, 9101) == {"mnist_mlp": (8101, 9101)}
    assert model_ports(["digit_gan", "mnist_cnn"], 8101, 9101) == {"mnist_cnn": (8102, 9102), "digit_gan": (8104, 9104)}
    # Models outside the contract come after every contract slot, even when those are unused.
    assert model_ports(["mnist_mlp", "extra"], 8101, 9101) == {"mnist_mlp": (8101, 9101), "extra": (8105, 9105)}
    assert model_ports([], 8101, 9101) == {}


def test_stack_serves_each_model_on_its_contract_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """build() with --models picks from the whole repository's table: mnist_cnn alone is still on base+1."""
    import services.stack as stack

    monkeypatch.setattr(stack, "load_repository", lambda root: dict.fromkeys(("mnist_mlp", "mnist_cnn", "digit_gan")))
    monkeypatch.setattr(stack.shutil, "which", lambda name: f"/usr/bin/{name}" if name == "redis-server" else None)
    args = argparse.Namespace(
        state_dir=str(tmp_path), redis_port=6390, model_repository="models", models=["mnist_cnn", "digit_gan"],
        model_base_port=18101, model_metrics_base_port=19101, port=18001, metrics_port=18002,
        prometheus_port=19090, no_prometheus=True, join=False, redis_tcp=False,
    )
    children, _ = stack.build(args)
    served = {c.name: (c.grpc_port, c.argv[c.argv.index("--metrics-port") + 1]) for c in children
              if "services.modelservice" in c.argv}
    assert served == {"mnist_cnn": (18102, "19102"), "digit_gan": (18104, "19104")}
    assert [c.name for c in children] == ["redis", "mnist_cnn", "digit_gan", "gateway"]



def test_join_starts_only_the_named_model_services_on_free_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import services.stack as stack

    monkeypatch.setattr(stack, "load_repository", lambda root: dict.fromkeys(("mnist_mlp", "ocr_det", "ocr_rec")))
    busy = {18105}  # another process holds ocr_det's slot
    monkeypatch.setattr(stack, "port_free", lambda port: port not in busy)
    monkeypatch.setattr(stack, "free_port", lambda: 40000)
    args = argparse.Namespace(
        state_dir=str(tmp_path), redis_port=6390, model_repository="models", models=["ocr_det"],
        model_base_port=18101, model_metrics_base_port=19101, port=18001, metrics_port=18002,
        prometheus_port=19090, no_prometheus=True, join=True, redis_tcp=False,
    )
    children, lines = stack.build(args)
    assert [c.name for c in children] == ["ocr_det"]  # no redis, no gateway: the running stack's serve
    assert children[0].grpc_port == 40000 and "19105" in children[0].argv
    assert "redis://127.0.0.1:6390/0" in children[0].argv
    with pytest.raises(SystemExit):
        stack.build(argparse.Namespace(**{**vars(args), "models": None}))


def test_the_stacks_processes_reach_its_redis_over_a_unix_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its own processes over the socket beside Redis's data; the TCP port stays open for everyone
    else; --redis-tcp, or a state dir too long for a socket path, keeps TCP."""
    import services.stack as stack

    monkeypatch.setattr(stack, "load_repository", lambda root: dict.fromkeys(("mnist_mlp",)))
    monkeypatch.setattr(stack.shutil, "which", lambda name: f"/usr/bin/{name}" if name == "redis-server" else None)
    args = argparse.Namespace(
        state_dir=str(tmp_path), redis_port=6390, model_repository="models", models=None,
        model_base_port=18101, model_metrics_base_port=19101, port=18001, metrics_port=18002,
        prometheus_port=19090, no_prometheus=True, join=False, redis_tcp=False,
    )

    def urls(children: list[stack.Child]) -> set[str]:
        return {c.argv[c.argv.index("--redis-url") + 1] for c in children if "--redis-url" in c.argv}

    sock = tmp_path.resolve() / "redis" / "redis.sock"
    if len(os.fsencode(sock)) >= stack.UNIX_PATH_MAX:
        pytest.skip(f"the test's own folder is too long for a unix socket path: {sock}")
    children, lines = stack.build(args)
    redis = children[0].argv
    assert redis[redis.index("--unixsocket") + 1] == str(sock) and redis[redis.index("--port") + 1] == "6390"
    assert urls(children) == {f"unix://{sock}?db=0"}
    assert "redis://127.0.0.1:6390/0" in lines[0]
    children, _ = stack.build(argparse.Namespace(**{**vars(args), "redis_tcp": True}))
    assert "--unixsocket" not in children[0].argv and urls(children) == {"redis://127.0.0.1:6390/0"}
    deep = tmp_path / ("d" * 120)
    children, _ = stack.build(argparse.Namespace(**{**vars(args), "state_dir": str(deep)}))
    assert "--unixsocket" not in children[0].argv and urls(children) == {"redis://127.0.0.1:6390/0"}
    # Joining a running stack: its socket when that stack made one, else its TCP port.
    joining = argparse.Namespace(**{**vars(args), "join": True, "models": ["mnist_mlp"]})
    monkeypatch.setattr(stack, "port_free", lambda port: True)
    assert urls(stack.build(joining)[0]) == {"redis://127.0.0.1:6390/0"}
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sock))
        assert urls(stack.build(joining)[0]) == {"redis://127.0.0.1:6390/0"}  # a stale socket: nobody listens
        listener.listen()
        assert urls(stack.build(joining)[0]) == {f"unix://{sock}?db=0"}



def test_what_to_try_next_names_only_the_models_the_stack_serves() -> None:
    from services.stack import next_steps

    every = next_steps(8001, {"mnist_mlp", "mnist_cnn", "translator_de_en", "digit_gan"})
    for command in ("classify --json", "classify --model mnist_mlp", "translate --stream", "generate 7",
                    "stats mnist_cnn", "make demo", ".classify(["):
        assert command in every
    assert "--url" not in every  # the default port needs none
    translator = next_steps(18001, {"translator_de_en"})
    assert "translate --stream" in translator and "stats translator_de_en --url 127.0.0.1:18001" in translator
    assert ".translate([" in translator
    for absent in ("classify", "generate", "make demo", "mnist"):
        assert absent not in translator
    assert "tensorgate models" in next_steps(8001, set()) and "stats" not in next_steps(8001, set())
