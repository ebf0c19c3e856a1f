"""What the translator runner's tests share: the shipped model, varied sentences, the runner
built over it, the batch search's translations to compare with, and a StepModel that fails on
demand (no mocks: the faults are injected through it)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.modelservice.runners.translator import TranslatorModel
from services.modelservice.runners.translator.translator import Arrays, OnnxStepModel, Translator
from tensorgate.repository import ModelSpec, load_spec
from services.settings import ModelServiceSettings

MODEL = Path(__file__).resolve().parents[2] / "models" / "translator_de_en"
NEEDS_MODEL = pytest.mark.skipif(not (MODEL / "1" / "decoder_step.onnx").is_file(),
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


def instances(n: int, parameters: dict[str, str] | None = None) -> ModelSpec:
    base = spec()
    return dataclasses.replace(base, parameters={**base.parameters, **(parameters or {})}, instance_count=n)


class FaultyModel:
    """The ONNX StepModel, failing its next step (or encoder call) when armed, or its next step
    of exactly `fail_rows` rows; a step waits while `open` is clear (`held` says one waits)."""

    def __init__(self, inner: OnnxStepModel) -> None:
        self.inner = inner
        self.bos_id, self.eos_id, self.state_axes = inner.bos_id, inner.eos_id, inner.state_axes
        self.fail_step, self.fail_encode = threading.Event(), threading.Event()
        self.fail_rows: int | None = None
        self.open, self.held = threading.Event(), threading.Event()
        self.open.set()
        self.steps = 0

    def encode(self, src: np.ndarray, src_mask: np.ndarray) -> tuple[Arrays, Arrays]:
        if self.fail_encode.is_set():
            self.fail_encode.clear()
            raise RuntimeError("injected encoder fault")
        return self.inner.encode(src, src_mask)

    def step(self, prev: np.ndarray, states: Arrays, context: Arrays) -> tuple[np.ndarray, Arrays]:
        self.steps += 1
        if not self.open.is_set():
            self.held.set()
            self.open.wait(30)
        if self.fail_step.is_set() or self.fail_rows == len(prev):
            self.fail_step.clear()
            self.fail_rows = None
            raise RuntimeError("injected step fault")
        return self.inner.step(prev, states, context)


def faulty_translator() -> tuple[Translator, FaultyModel]:
    """A translator over the shipped model whose StepModel fails when armed."""
    translator = Translator(MODEL / "1", threads=1)
    assert isinstance(translator.model, OnnxStepModel)
    faulty = FaultyModel(translator.model)
    translator.model = faulty
    return translator, faulty


def wait_until(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)
