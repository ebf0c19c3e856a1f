"""The continuous-batching translator runner over the shipped model: requests that arrive at
any time, with their own beam sizes, share the running batch and get the batch search's
translations; the batch keeps its caps; odd inputs and over-long sentences."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.modelservice.runners.translator import TranslatorModel
from tests.unit.translator_shipped import (LONG, MODEL, NEEDS_MODEL, SENTENCES, assert_same, infer, settings,
                                           spec, staggered, text)
from tests.unit.translator_shipped import model, reference  # noqa: F401 (fixtures)

pytestmark = NEEDS_MODEL


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

    from tensorgate.errors import InvalidArgument
    from services.modelservice.runners.translator import TranslatorModel
    from tensorgate.repository import load_spec
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



def test_the_configs_intra_op_thread_count_reaches_the_translators_sessions() -> None:
    m = TranslatorModel(spec(intra_op_thread_count="2"), settings())  # the service's setting says 1
    try:
        decoder = m.translator.model.decoder  # type: ignore[attr-defined]
        assert decoder.get_session_options().intra_op_num_threads == 2
        assert m.translator.model.encoder.get_session_options().intra_op_num_threads == 2  # type: ignore[attr-defined]
        out = asyncio.run(infer(m, ["Ich habe keine Zeit."], 5))
        assert [t.decode() for t in out["translation"]] == ["I have no time."]
    finally:
        m.close()
