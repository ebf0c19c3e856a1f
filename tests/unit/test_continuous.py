"""The continuous-batching translator runner over the shipped model (no mocks; a wrapped
StepModel injects the faults).

Decided behaviour on faults: a decoder step that raises fails every request with a sentence in
that step (the states of all of them are lost), loudly (logged); requests still waiting, and
later ones, are answered. An encoder call that raises fails only the sentences it encoded."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.modelservice.runners.translator import TranslatorModel
from services.repository import ModelSpec, load_spec
from services.settings import ModelServiceSettings
from services.modelservice.runners.translator.translator import Arrays, OnnxStepModel, Translator
from services.modelservice.runners.translator.device import BoundRows

MODEL = Path(__file__).resolve().parents[2] / "models" / "translator_de_en"
pytestmark = pytest.mark.skipif(not (MODEL / "1" / "decoder_step.onnx").is_file(),
                                reason="models/translator_de_en not trained yet")

# Varied German sentences, 2 to 40 source tokens.
SENTENCES = [
    "Ja.", "Guten Morgen.", "Wie spät ist es?", "Ich habe keine Ahnung.", "Danke schön!",
    "Das Wetter ist heute schön.", "Kommst du morgen mit ins Kino?", "Er trinkt gern Kaffee.",
    "Der Hund kam unter dem Tisch hervor.", "Wir müssen jetzt leider gehen.",
    "Sie hat ihm das Buch gestern zurückgegeben.", "Das Abendessen hat mir sehr gut geschmeckt.",
    "Kannst du mir bitte sagen, wo der nächste Bahnhof ist?", "Es regnet seit drei Tagen ohne Pause.",
    "Meine Schwester wohnt in einer kleinen Stadt am Meer.", "Ich weiß nicht, ob er heute noch kommt.",
    "Die Kinder spielen im Garten, während die Eltern kochen.", "Halt!", "Wer ist da?",
    "Nach dem Essen gingen wir noch lange am Fluss spazieren.",
    "Der Zug hatte wegen eines technischen Defekts über eine Stunde Verspätung.",
    "Er legt besonderen Wert darauf, sich gute Lerngewohnheiten anzueignen.",
    "Wenn ich mehr Zeit hätte, würde ich öfter Bücher lesen und Sport treiben.",
    "Das Schwergewicht hat sich vom Produktions- zum Dienstleistungssektor verlagert.",
    "Obwohl es schon spät war, arbeitete sie noch an ihrem Bericht für die Konferenz.",
    "Die Regierung hat beschlossen, die Steuern im nächsten Jahr nicht zu erhöhen.",
    "Mach dir keine Umstände, ich mache das schon.", "Wo ist mein Schlüssel?",
    "Das ist nicht meine Schuld.", "Er hat den ganzen Tag nichts gegessen.",
    "Morgen früh fahren wir mit dem Auto in die Berge, um dort eine Woche Urlaub zu machen.",
    "Ich hätte nie gedacht, dass die Prüfung so schwierig sein würde, aber am Ende habe ich "
    "sie doch bestanden.",
    "Könnten Sie mir bitte erklären, wie dieses Gerät funktioniert und was ich beachten muss?",
    "Vielen Dank für Ihre Hilfe.", "Das Konzert wurde wegen des Sturms abgesagt.",
    "Sie lachte.", "Wir sehen uns nächste Woche wieder.",
    "Die Ergebnisse der Untersuchung werden erst in einigen Monaten veröffentlicht, "
    "sagte ein Sprecher des Ministeriums am Dienstag in Berlin.",
    "Alles klar.", "Der Lehrer erklärte den Schülern geduldig die Regeln der Grammatik.",
]
LONG = [s for s in SENTENCES if len(s) > 70]


def settings() -> ModelServiceSettings:
    return ModelServiceSettings.model_validate({"device": "cpu", "intra_op_threads": 1})


def spec(max_batch_size: int | None = None, **parameters: str) -> ModelSpec:
    """The shipped config with one decode loop (instances() for more)."""
    base = load_spec(MODEL)
    return dataclasses.replace(base, max_batch_size=max_batch_size or base.max_batch_size,
                               parameters={**base.parameters, **parameters}, instance_count=1)


@pytest.fixture(scope="module")
def model() -> Iterator[TranslatorModel]:
    m = TranslatorModel(spec(), settings())
    m.warmup()
    yield m
    m.close()


@pytest.fixture(scope="module")
def reference(model: TranslatorModel) -> dict[int, list[tuple[str, float]]]:
    """Translator.translate over all sentences at once, per beam size."""
    translator = Translator(MODEL / "1", threads=1)
    return {beam: translator.translate(SENTENCES, beam_size=beam, alpha=model.alpha,
                                       max_output_len=model.max_output_len) for beam in (1, 2, 5)}


def text(*sentences: str) -> dict[str, np.ndarray]:
    return {"text": np.array([s.encode() for s in sentences], dtype=object)}


async def infer(model: TranslatorModel, sentences: list[str], beam: int, delay_s: float = 0.0
                ) -> dict[str, np.ndarray]:
    if delay_s:
        await asyncio.sleep(delay_s)
    return await model.infer(text(*sentences), ["translation", "score"], {"beam_size": beam}, None)  # type: ignore[arg-type]


async def staggered(model: TranslatorModel, beams: list[int], seed: int = 0
                    ) -> dict[int, list[tuple[str, float]]]:
    """All sentences, for each beam size, as requests of 1-3 sentences started at random times
    within ~50 ms -> (translation, score) per sentence, per beam size."""
    rng = np.random.default_rng(seed)
    jobs = []
    for beam in beams:
        start = 0
        while start < len(SENTENCES):
            size = int(rng.integers(1, 4))
            jobs.append((beam, start, SENTENCES[start:start + size], float(rng.uniform(0, 0.05))))
            start += size
    outs = await asyncio.gather(*(infer(model, chunk, beam, delay) for beam, _, chunk, delay in jobs))
    results: dict[int, list[tuple[str, float]]] = {beam: [("", 0.0)] * len(SENTENCES) for beam in beams}
    for (beam, start, chunk, _), out in zip(jobs, outs):
        assert out["translation"].dtype == object and out["score"].dtype == np.float32
        for i in range(len(chunk)):
            results[beam][start + i] = (out["translation"][i].decode(), float(out["score"][i]))
    return results


def assert_same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("beam", [5, 1])
def test_staggered_concurrent_requests_match_the_batch_search(
        model: TranslatorModel, reference: dict[int, list[tuple[str, float]]], beam: int) -> None:
    assert_same(asyncio.run(staggered(model, [beam], seed=beam))[beam], reference[beam])


def test_requests_of_different_beam_sizes_share_the_running_batch(
        model: TranslatorModel, reference: dict[int, list[tuple[str, float]]]) -> None:
    results = asyncio.run(staggered(model, [1, 2, 5], seed=3))
    for beam in (1, 2, 5):
        assert_same(results[beam], reference[beam])


def test_a_short_sentence_is_answered_before_the_long_ones_it_came_with(model: TranslatorModel) -> None:
    async def race() -> list[str]:
        order: list[str] = []

        async def one(sentence: str) -> None:
            await infer(model, [sentence], 5)
            order.append(sentence)

        await asyncio.gather(*(one(s) for s in [*LONG, "Ja.", *LONG]))
        return order

    assert asyncio.run(race())[0] == "Ja."


def test_the_running_batch_stays_within_its_token_and_sentence_caps(
        reference: dict[int, list[tuple[str, float]]]) -> None:
    m = TranslatorModel(spec(max_batch_size=6, max_batch_tokens="500"), settings())
    try:
        assert_same(asyncio.run(staggered(m, [5]))[5], reference[5])
        counters = m.decoders[0].scheduler.counters
        assert 250 < counters.peak_tokens <= 500  # beam x padded width, summed over sentences
        assert counters.peak_sentences <= 6 and counters.peak_rows <= 5 * 6
    finally:
        m.close()


def test_room_counts_queued_requests_and_wait_for_room_wakes_up() -> None:
    m = TranslatorModel(spec(max_batch_size=2), settings())  # room for 2 x 2 requests

    async def scenario() -> None:
        assert m.room() == 4
        await m.wait_for_room()  # returns at once while there is room
        tasks = [asyncio.create_task(infer(m, [s], 5)) for s in LONG[:4]]
        await asyncio.sleep(0)  # they submit
        assert m.room() == 0
        waiter = asyncio.create_task(m.wait_for_room())
        await asyncio.sleep(0.001)
        assert not waiter.done()
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.wait_for(waiter, 1.0)
        assert m.room() >= len(done)
        await asyncio.gather(*tasks)
        assert m.room() == 4

    try:
        asyncio.run(scenario())
    finally:
        m.close()


def test_room_is_in_requests_with_a_sentence_cap_inside() -> None:
    """The worker reads room() stream entries: a request of several sentences takes one unit of
    room, and room closes while the queued sentences reach the cap (2 x 4 here)."""
    m = TranslatorModel(spec(max_batch_size=4), settings())

    async def scenario() -> None:
        assert m.room() == 8
        three = asyncio.create_task(infer(m, LONG[:3], 5))
        await asyncio.sleep(0)
        assert m.room() == 7  # one request, though three sentences
        many = asyncio.create_task(infer(m, SENTENCES[:5], 5))
        await asyncio.sleep(0)
        assert m.room() == 0  # 8 sentences queued: the cap, whatever the request count
        await asyncio.gather(three, many)
        assert m.room() == 8 and m.admission.sentences == 0

    try:
        asyncio.run(scenario())
    finally:
        m.close()


def test_a_failed_request_gives_back_all_its_sentences() -> None:
    """Also those done before another of its sentences failed."""
    translator = Translator(MODEL / "1", threads=1)
    assert isinstance(translator.model, OnnxStepModel)
    faulty = FaultyModel(translator.model)
    translator.model = faulty
    m = TranslatorModel(spec(max_batch_size=4), settings(), translator=translator)

    async def scenario() -> None:
        task = asyncio.create_task(infer(m, ["Ja.", *LONG[:2]], 5))
        await asyncio.to_thread(wait_until, lambda: faulty.steps >= 6)  # "Ja." is done by now
        faulty.fail_step.set()
        with pytest.raises(RuntimeError, match="injected step fault"):
            await task
        assert m.room() == 8 and m.admission.sentences == 0

    try:
        asyncio.run(scenario())
    finally:
        m.close()


def instances(n: int, parameters: dict[str, str] | None = None) -> ModelSpec:
    base = spec()
    return dataclasses.replace(base, parameters={**base.parameters, **(parameters or {})}, instance_count=n)


@pytest.mark.parametrize("parameters", [{}, {"instance_sessions": "own"}, {"routing": "least_loaded"},
                                        {"short_share": "0", "nice_longer_loops": "10"}])
def test_two_decode_loops_give_the_batch_search_translations(
        reference: dict[int, list[tuple[str, float]]], parameters: dict[str, str]) -> None:
    m = TranslatorModel(instances(2, parameters), settings())
    try:
        m.warmup()
        assert len(m.decoders) == 2 and len({d._thread.name for d in m.decoders}) == 2
        assert (m.translators[0] is m.translators[1]) == (parameters.get("instance_sessions") != "own")
        for _ in range(3):  # enough arrivals for the length bands
            assert_same(asyncio.run(staggered(m, [5], seed=7))[5], reference[5])
        assert all(d.scheduler.counters.steps > 0 for d in m.decoders)  # both loops worked
        assert m.room() == 2 * 2 * m.max_sentences
    finally:
        m.close()


def test_the_shipped_config_serves_with_its_instances(reference: dict[int, list[tuple[str, float]]]) -> None:
    m = TranslatorModel(load_spec(MODEL), settings())
    try:
        m.warmup()
        assert len(m.decoders) == m.spec.instance_count
        assert_same(asyncio.run(staggered(m, [5], seed=11))[5], reference[5])
    finally:
        m.close()


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no per-thread nice values here")
def test_the_longer_loops_run_at_a_lower_cpu_priority() -> None:
    m = TranslatorModel(instances(3, {"nice_longer_loops": "5"}), settings())
    try:
        wait_until(lambda: all(d.native_id is not None for d in m.decoders))
        own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert [os.getpriority(os.PRIO_PROCESS, d.native_id) for d in m.decoders] == [  # type: ignore[arg-type]
            own, min(19, own + 5), min(19, own + 5)]
    finally:
        m.close()


@pytest.mark.parametrize("share", ["0", "0.25"])  # bands of even work; the shortest quarter first
def test_length_routing_puts_short_sentences_on_the_first_loop(share: str) -> None:
    m = TranslatorModel(instances(2, {"short_share": share}), settings())
    try:
        for _ in range(2):
            m.run(text(*SENTENCES), ["translation"])  # lengths seen: bands set
        short = min(SENTENCES, key=lambda s: len(m.translator.source_ids(s)))
        longest = max(SENTENCES, key=lambda s: len(m.translator.source_ids(s)))
        assert m._route([m.translator.source_ids(short)]) is m.decoders[0]
        assert m._route([m.translator.source_ids(longest)]) is m.decoders[1]
    finally:
        m.close()


class FaultyModel:
    """The ONNX StepModel, failing its next step (or encoder call) when armed."""

    def __init__(self, inner: OnnxStepModel) -> None:
        self.inner = inner
        self.bos_id, self.eos_id, self.state_axes = inner.bos_id, inner.eos_id, inner.state_axes
        self.fail_step, self.fail_encode = threading.Event(), threading.Event()
        self.steps = 0

    def encode(self, src: np.ndarray, src_mask: np.ndarray) -> tuple[Arrays, Arrays]:
        if self.fail_encode.is_set():
            self.fail_encode.clear()
            raise RuntimeError("injected encoder fault")
        return self.inner.encode(src, src_mask)

    def step(self, prev: np.ndarray, states: Arrays, context: Arrays) -> tuple[np.ndarray, Arrays]:
        self.steps += 1
        if self.fail_step.is_set():
            self.fail_step.clear()
            raise RuntimeError("injected step fault")
        return self.inner.step(prev, states, context)


def wait_until(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_failing_step_fails_the_running_requests_only(
        reference: dict[int, list[tuple[str, float]]]) -> None:
    translator = Translator(MODEL / "1", threads=1)
    assert isinstance(translator.model, OnnxStepModel)
    faulty = FaultyModel(translator.model)
    translator.model = faulty
    m = TranslatorModel(spec(max_batch_size=1), settings(), translator=translator)

    async def scenario() -> None:
        running = asyncio.create_task(infer(m, [LONG[0]], 5))
        waiting = asyncio.create_task(infer(m, [SENTENCES[5]], 5))  # queued behind (1 sentence max)
        await asyncio.to_thread(wait_until, lambda: faulty.steps >= 2)
        faulty.fail_step.set()
        with pytest.raises(RuntimeError, match="injected step fault"):
            await running
        out = await waiting
        assert out["translation"][0].decode() == reference[5][5][0]
        faulty.fail_encode.set()
        with pytest.raises(RuntimeError, match="injected encoder fault"):
            await infer(m, [SENTENCES[6]], 5)
        out = await infer(m, SENTENCES[7:9], 5)  # the loop goes on
        assert [t.decode() for t in out["translation"]] == [t for t, _ in reference[5][7:9]]

    try:
        asyncio.run(scenario())
    finally:
        m.close()


def test_a_cancelled_request_leaves_the_batch(model: TranslatorModel,
                                              reference: dict[int, list[tuple[str, float]]]) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(infer(model, LONG, 5))
        await asyncio.to_thread(wait_until, lambda: len(model.decoders[0].scheduler.running) > 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(wait_until, lambda: not model.decoders[0].scheduler.busy)
        assert model.room() == 2 * model.max_sentences
        out = await infer(model, SENTENCES[:2], 5)
        assert [t.decode() for t in out["translation"]] == [t for t, _ in reference[5][:2]]

    asyncio.run(scenario())


def test_close_stops_the_thread_and_fails_what_is_left() -> None:
    m = TranslatorModel(spec(), settings())

    async def scenario() -> None:
        task = asyncio.create_task(infer(m, LONG, 5))
        await asyncio.sleep(0.01)
        m.close()
        assert not m.decoders[0]._thread.is_alive()
        with pytest.raises(RuntimeError, match="closed"):
            await task
        with pytest.raises(RuntimeError, match="closed"):
            await infer(m, ["Ja."], 5)

    asyncio.run(scenario())


def test_io_binding_rows_give_the_same_translations_on_cpu(
        reference: dict[int, list[tuple[str, float]]]) -> None:
    m = TranslatorModel(spec(io_binding="true"), settings())
    try:
        assert isinstance(m.translator.rows(), BoundRows)
        results = asyncio.run(staggered(m, [5, 1], seed=5))
        assert_same(results[5], reference[5])
        assert_same(results[1], reference[1])
    finally:
        m.close()


def test_a_broken_io_binding_path_falls_back_to_host_rows_in_auto_mode(
        monkeypatch: pytest.MonkeyPatch, reference: dict[int, list[tuple[str, float]]]) -> None:
    def broken(self: BoundRows, prev: np.ndarray) -> np.ndarray:
        raise RuntimeError("injected device fault")

    monkeypatch.setattr(BoundRows, "step", broken)
    translator = Translator(MODEL / "1", threads=1, io_binding=True)  # as auto picks it on CUDA
    m = TranslatorModel(spec(io_binding="auto"), settings(), translator=translator)
    try:
        m.warmup()
        assert not m.translator.io_binding and not isinstance(m.translator.rows(), BoundRows)
        out = m.run(text(*SENTENCES[:3]), ["translation"], {"beam_size": 5})
        assert [t.decode() for t in out["translation"]] == [t for t, _ in reference[5][:3]]
    finally:
        m.close()
    forced = TranslatorModel(spec(io_binding="true"), settings())
    try:
        with pytest.raises(RuntimeError, match="injected device fault"):
            forced.warmup()  # asked for explicitly: no fallback
    finally:
        forced.close()


def test_run_warmup_and_odd_inputs(model: TranslatorModel,
                                   reference: dict[int, list[tuple[str, float]]]) -> None:
    out = model.run(text(SENTENCES[3], "\xff".encode("latin-1").decode("latin-1")), ["translation"],
                    {"beam_size": 5})
    assert out["translation"][0].decode() == reference[5][3][0] and out["score"].shape == (2,)
    invalid = model.run({"text": np.array([b"\xff\xfe Hallo"], dtype=object)}, ["translation"])
    assert invalid["translation"].shape == (1,)  # replaced, not fatal
    empty = model.run({"text": np.array([], dtype=object)}, ["translation"])
    assert empty["translation"].shape == (0,) and empty["score"].shape == (0,)
    with pytest.raises(ValueError, match="beam_size"):
        model.run(text("Ja."), ["translation"], {"beam_size": model.max_beam_size + 1})


def test_a_sentence_over_the_token_limit_fails_only_its_request() -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from services.errors import InvalidArgument
    from services.modelservice.runners.translator import TranslatorModel
    from services.repository import load_spec
    from services.settings import ModelServiceSettings

    spec = load_spec(MODEL)
    model = TranslatorModel(spec, ModelServiceSettings(device="cpu", intra_op_threads=1))
    steps: list[int] = []
    model.on_step = steps.append
    try:
        assert model.max_input_tokens == 159
        long = " ".join(["Haus"] * 400)

        async def main() -> tuple[object, object]:
            with ThreadPoolExecutor(1) as pool:
                text = np.array([b"Guten Morgen.", long.encode()], dtype=object)
                good = np.array([b"Ich habe keine Zeit."], dtype=object)
                return await asyncio.gather(model.infer({"text": text}, ["translation"], {}, pool),
                                            model.infer({"text": good}, ["translation"], {}, pool),
                                            return_exceptions=True)

        refused, answered = asyncio.run(main())
        assert isinstance(refused, InvalidArgument) and "element 1 has" in str(refused) and "max_input_tokens" in str(refused)
        assert isinstance(answered, dict) and answered["translation"][0]
        assert steps and max(steps) >= 1  # the batch-size hook saw the running batch
    finally:
        model.close()
