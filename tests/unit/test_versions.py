"""Which versions a replica serves (version_policy) and how the gateway reads the replicas'
announcements into one state per version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import text_format

from tensorgate.errors import ModelNotFound
from tensorgate.proto import model_config_pb2 as mc
from services.queue.catalog import LOADING, READY, UNAVAILABLE, Announcement, ModelView, ReplicaView, VersionState
from tensorgate.repository import load_spec, load_specs, select_versions
from tests.support import make_tiny_repository

AVAILABLE = ["1", "2", "10", "3"]


def policy(text: str) -> mc.ModelConfig:
    return text_format.Parse(f"version_policy {{ {text} }}" if text else "", mc.ModelConfig())


@pytest.mark.parametrize(("text", "served"), [
    ("", ["10"]),  # Triton's default: the newest one, by number not by name
    ("latest { num_versions: 2 }", ["3", "10"]),
    ("all { }", ["1", "2", "3", "10"]),
    ("specific { versions: [1, 3, 7] }", ["1", "3"]),  # listed and present
])
def test_version_policy_selects_as_triton_does(text: str, served: list[str]) -> None:
    assert select_versions(policy(text), AVAILABLE) == served


def test_load_specs_follows_the_policy_and_a_pinned_version_wins(tmp_path: Path) -> None:
    model = make_tiny_repository(tmp_path, "m") / "m"
    for version in ("2", "3"):
        (model / version).mkdir()
    config = model / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy { latest { num_versions: 2 } }\n")
    assert sorted(load_specs(model)) == ["2", "3"]
    assert load_spec(model).version == "3"
    assert list(load_specs(model, "1")) == ["1"]  # pinned in the settings: served whatever the policy
    with pytest.raises(ModelNotFound, match="no version 9"):
        load_specs(model, "9")
    config.write_text(config.read_text().replace("latest { num_versions: 2 }", "specific { versions: [7] }"))
    with pytest.raises(ModelNotFound, match="selects none"):
        load_specs(model)


def view(*replicas: tuple[bool, dict[str, VersionState]]) -> ModelView:
    return ModelView("m", tuple(ReplicaView(f"r{i}", ready, versions) for i, (ready, versions) in enumerate(replicas)))


def test_a_version_is_ready_when_a_ready_replica_serves_it() -> None:
    switching = view((True, {"1": VersionState(READY), "2": VersionState(READY)}),
                     (True, {"1": VersionState(READY), "2": VersionState(LOADING, "loading")}))
    assert switching.versions() == ["1", "2"]
    assert switching.state("2") == VersionState(READY)
    assert switching.ready_on("2") == (1, 2)  # a request naming 2 must wait until both have it
    assert switching.ready_on("1") == (2, 2)
    loading = view((True, {"1": VersionState(READY), "2": VersionState(LOADING, "loading")}))
    assert loading.state("2").state == LOADING
    draining = view((False, {"1": VersionState(READY)}))
    assert draining.state("1") == VersionState(UNAVAILABLE, "its replicas are draining")
    failed = view((True, {"1": VersionState(READY), "2": VersionState(UNAVAILABLE, "failed to load: bad graph")}))
    assert failed.state("2") == VersionState(UNAVAILABLE, "failed to load: bad graph")
    assert view((True, {"1": VersionState(READY)})).versions() == ["1"]


def test_announcements_survive_the_round_trip_and_garbage_reads_as_nothing() -> None:
    sent = Announcement({"1": VersionState(READY), "2": VersionState(LOADING, "loading")})
    assert Announcement.versions_from_json(sent.to_json()) == dict(sent.versions)
    assert Announcement.versions_from_json(b"not json") == {}
    assert Announcement.versions_from_json(b'{"1": 5}') == {}


def test_a_retired_version_closes_only_once_its_admitted_requests_are_answered(tmp_path: Path) -> None:
    import asyncio

    from services.modelservice.versions import ModelVersions
    from services.settings import ModelServiceSettings

    class Loaded:  # what retiring touches of a LoadedVersion
        version = "1"
        running = 2  # two requests admitted onto it, not yet answered
        closed = False

        def close(self) -> None:
            self.closed = True

    async def main() -> list[bool]:
        versions = ModelVersions(ModelServiceSettings(name="m", model_repository=tmp_path))
        old = Loaded()
        versions.current = {"1": old}  # type: ignore[dict-item]
        versions._swap({})  # e.g. an unload, or version 2 replacing it
        seen = []
        for _ in range(2):
            await asyncio.sleep(0.05)
            seen.append(old.closed)
            old.running -= 1  # a request answered
        await asyncio.sleep(0.1)
        seen.append(old.closed)
        return seen

    assert asyncio.run(main()) == [False, False, True]


def test_a_version_that_fails_to_load_leaves_the_served_one_serving(tmp_path: Path) -> None:
    """latest 1: a broken version 2 does not retire version 1; a config typo (the config is the
    versions' shared file) leaves version 1 on its old config. Each failure is announced."""
    import asyncio

    from services.modelservice.versions import ModelVersions
    from services.settings import ModelServiceSettings

    make_tiny_repository(tmp_path, "m")
    config = tmp_path / "m" / "config.pbtxt"
    original = config.read_text()

    async def main() -> None:
        versions = ModelVersions(ModelServiceSettings(name="m", model_repository=tmp_path, device="cpu",
                                                      intra_op_threads=1))
        versions.load_initial()
        (tmp_path / "m" / "2").mkdir()
        (tmp_path / "m" / "2" / "model.onnx").write_bytes(b"not an onnx graph")
        with pytest.raises(Exception):
            await versions.sync()
        assert list(versions.current) == ["1"] and versions.default is versions.current["1"]
        assert versions.announcement().versions["2"].state == UNAVAILABLE
        (tmp_path / "m" / "2" / "model.onnx").unlink()
        (tmp_path / "m" / "2").rmdir()
        config.write_text(original + 'parameters { key: "intra_op_threads" value: { string_value: "2" } }\n')
        with pytest.raises(ValueError, match="intra_op_threads"):
            await versions.sync()
        assert list(versions.current) == ["1"] and "intra_op_threads" not in versions.current["1"].spec.parameters
        kept = versions.announcement().versions["1"]  # ready, and saying why its config is the old one
        assert kept.state == READY and "previous config" in kept.reason and "intra_op_threads" in kept.reason
        for lv in versions.current.values():
            lv.close()

    asyncio.run(main())


def test_a_ready_version_with_a_reason_is_still_ready_and_shows_it() -> None:
    kept = VersionState(READY, "serving its previous config; the new one failed to load: ValueError: x")
    view = ModelView("m", (ReplicaView("a", True, {"1": kept}), ReplicaView("b", True, {"1": VersionState(READY)})))
    assert view.state("1") == kept and view.ready_on("1") == (2, 2)
    assert ModelView("m", (ReplicaView("b", True, {"1": VersionState(READY)}),)).state("1") == VersionState(READY)



def _versions_after(tmp_path: Path, policy: str, folders: list[str], change: Callable[[Path], None],
                    unload_first: bool = False) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """(versions served, announced states) after `change` to a repository served with `policy`."""
    import asyncio
    import shutil

    from services.modelservice.versions import ModelVersions
    from services.settings import ModelServiceSettings

    make_tiny_repository(tmp_path, "m")
    model = tmp_path / "m"
    config = model / "config.pbtxt"
    config.write_text(config.read_text() + f"version_policy {{ {policy} }}\n")
    for v in folders:
        (model / v).mkdir()
        shutil.copy(model / "1" / "model.onnx", model / v / "model.onnx")

    async def main() -> tuple[list[str], dict[str, tuple[str, str]]]:
        versions = ModelVersions(ModelServiceSettings(name="m", model_repository=tmp_path, device="cpu",
                                                      intra_op_threads=1))
        versions.load_initial()
        if unload_first:
            await versions.unload(0.0)
        change(model)
        try:
            await (versions.load() if unload_first else versions.sync())
        except Exception:
            pass
        served = sorted(versions.current, key=int)
        states = {v: (s.state, s.reason[:40]) for v, s in versions.announcement().versions.items()}
        assert versions.accepting  # a load that partly failed still takes work
        for lv in versions.current.values():
            lv.close()
        return served, states

    return asyncio.run(main())


def _broken(model: Path, version: str) -> None:
    (model / version).mkdir(exist_ok=True)
    (model / version / "model.onnx").write_bytes(b"not an onnx graph")


def test_after_a_failed_load_the_policy_chooses_again_without_the_failed_version(tmp_path: Path) -> None:
    import shutil

    # A rollback: version 3 deleted, version 1 (now wanted) broken. Version 2 alone, not 3.
    def rollback(model: Path) -> None:
        shutil.rmtree(model / "3")
        (model / "1" / "model.onnx").write_bytes(b"broken")

    served, states = _versions_after(tmp_path / "a", "latest { num_versions: 2 }", ["2", "3"], rollback)
    assert served == ["2"] and states["1"][0] == UNAVAILABLE and "3" not in states
    # latest 2 over 1, 2 with a broken 3 and a good 4: 2 and 4, not three versions.
    def broken_and_good(model: Path) -> None:
        _broken(model, "3")
        (model / "4").mkdir()
        shutil.copy(model / "1" / "model.onnx", model / "4" / "model.onnx")

    served, _ = _versions_after(tmp_path / "b", "latest { num_versions: 2 }", ["2"], broken_and_good)
    assert served == ["2", "4"]
    # A deleted version is not kept for a broken one.
    def deleted_and_broken(model: Path) -> None:
        shutil.rmtree(model / "1")
        _broken(model, "3")

    served, _ = _versions_after(tmp_path / "c", "all { }", ["2"], deleted_and_broken)
    assert served == ["2"]
    # After an unload, a load whose newest version is broken loads the one it would have replaced.
    served, states = _versions_after(tmp_path / "d", "latest { num_versions: 1 }", [], lambda m: _broken(m, "2"),
                                     unload_first=True)
    assert served == ["1"] and states["1"] == (READY, "") and states["2"][0] == UNAVAILABLE


def test_a_config_edit_that_failed_and_was_reverted_leaves_no_stale_reason(tmp_path: Path) -> None:
    import asyncio

    from services.modelservice.versions import ModelVersions
    from services.settings import ModelServiceSettings

    make_tiny_repository(tmp_path, "m")
    config = tmp_path / "m" / "config.pbtxt"
    original = config.read_text()

    async def main() -> list[tuple[str, str]]:
        versions = ModelVersions(ModelServiceSettings(name="m", model_repository=tmp_path, device="cpu",
                                                      intra_op_threads=1))
        versions.load_initial()
        seen = []
        for text in (original + 'parameters { key: "typo" value: { string_value: "1" } }\n', original):
            config.write_text(text)
            try:
                await versions.sync()
            except ValueError:
                pass
            state = versions.announcement().versions["1"]
            seen.append((state.state, state.reason[:27]))
        for lv in versions.current.values():
            lv.close()
        return seen

    assert asyncio.run(main()) == [(READY, "serving its previous config"), (READY, "")]
