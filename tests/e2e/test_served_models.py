"""Every shipped model served by the local stack (`python -m services.stack`), called through the
gateway with the SDK as an application would: classify, translate, generate, and bad input."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from services.client import Client, InferenceError, load_digit
from services.stack import DEMO_SENTENCES
from tests.support import REPO_ROOT

pytestmark = pytest.mark.integration

MODELS = REPO_ROOT / "models"
SHIPPED = sorted(p.name for p in MODELS.iterdir() if (p / "config.pbtxt").is_file())


def needs(model: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(model not in SHIPPED, reason=f"models/{model} not trained yet")


def test_every_shipped_model_is_ready(gateway: str) -> None:
    with Client(gateway) as client:
        assert {(name, state) for name, _, state in client.models()} == {(name, "READY") for name in SHIPPED}


@needs("mnist_cnn")
def test_cnn_reads_the_sample_digits(gateway: str) -> None:
    files = sorted((REPO_ROOT / "samples" / "mnist").glob("*.png"))
    with Client(gateway) as client:
        labels, _ = client.classify([load_digit(f) for f in files], "mnist_cnn")
    assert [int(f.stem[-1]) for f in files] == labels.tolist()


@needs("translator_de_en")
def test_translation_through_the_gateway_is_the_search_code_in_process(gateway: str) -> None:
    from services.modelservice.runners.translator.translator import Translator

    local = Translator(MODELS / "translator_de_en" / "1")
    with Client(gateway) as client:
        served = client.translate(DEMO_SENTENCES)  # the config's beam size (5)
        greedy = client.translate(DEMO_SENTENCES, beam_size=1)
        with pytest.raises(InferenceError) as err:  # an empty sentence is refused, not translated
            client.translate(["Ja.", ""])
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "sentences[1]" in err.value.message
        for bad in (0, 99):
            with pytest.raises(InferenceError) as err:
                client.translate(DEMO_SENTENCES[:1], beam_size=bad)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "beam_size" in err.value.message
    want = local.translate(DEMO_SENTENCES, beam_size=5)
    assert [t for t, _ in served] == [t for t, _ in want]
    np.testing.assert_allclose([s for _, s in served], [s for _, s in want], rtol=1e-4)
    assert [t for t, _ in greedy] == [t for t, _ in local.translate(DEMO_SENTENCES, beam_size=1)]
    assert all(text.strip() for text, _ in served)


@needs("digit_gan")
def test_gan_draws_the_same_digit_for_the_same_seed(gateway: str) -> None:
    with Client(gateway) as client:
        first = client.generate([3, 3, 8], [11, 12, 11])
        again = client.generate([3], [11])
        column = client.infer("digit_gan", {"digit": np.array([[3]], np.int64), "seed": np.array([[11]], np.int64)})
        with pytest.raises(InferenceError) as err:
            client.generate([10], [1])
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "input 'digit'" in err.value.message
        assert client.generate([0], [1]).shape == (1, 1, 28, 28)  # still serving after the bad request
    assert first.shape == (3, 1, 28, 28) and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[0], column["image"][0])  # [N, 1] (Triton's dims) works too
    assert np.abs(first[0] - first[1]).max() > 0.1  # another seed, another drawing
