"""The translator runner with its decoder inputs on the device (IO binding, device.py), over the
shipped model on the CPU: the same translations, and a broken device path that falls back to
host rows in auto mode (and fails when asked for explicitly)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.modelservice.runners.translator import TranslatorModel
from services.modelservice.runners.translator.device import BoundRows
from services.modelservice.runners.translator.translator import Translator
from tests.unit.translator_shipped import (MODEL, NEEDS_MODEL, SENTENCES, assert_same, settings, spec,
                                           staggered, text)
from tests.unit.translator_shipped import model, reference  # noqa: F401 (fixtures)

pytestmark = NEEDS_MODEL


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

