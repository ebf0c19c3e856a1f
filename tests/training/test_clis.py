"""Each model family runs as `python -m training.<family> ...`: the MNIST networks as subcommands,
the GAN and the translator's jobs directly, their tools as submodules."""

from __future__ import annotations

from typing import Callable, Sequence

import pytest

from training.gan.train import parse_args as gan_args
from training.mnist.__main__ import main as mnist
from training.translator.train import parse_args as translator_args


def help_text(run: Callable[[Sequence[str]], object], argv: Sequence[str],
              capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        run(argv)
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_mnist_names_its_networks(capsys: pytest.CaptureFixture[str]) -> None:
    out = help_text(mnist, ["--help"], capsys)
    assert out.startswith("usage: python -m training.mnist") and "mlp" in out and "cnn" in out
    for network, flag in (("mlp", "--hidden"), ("cnn", "--channels")):
        out = help_text(mnist, [network, "--help"], capsys)
        assert out.startswith(f"usage: python -m training.mnist {network}") and flag in out


@pytest.mark.parametrize("argv", [[], ["rnn"], ["--epochs", "1"]])
def test_mnist_refuses_a_missing_or_unknown_network(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        mnist(argv)
    assert exited.value.code == 2


def test_gan_and_translator_jobs_and_their_tools(capsys: pytest.CaptureFixture[str]) -> None:
    from training.gan.rejudge import main as rejudge
    from training.mnist.real_life import main as real_life
    from training.translator.translate import main as translate

    for run, prog in ((gan_args, "python -m training.gan"), (translator_args, "python -m training.translator"),
                      (rejudge, "python -m training.gan.rejudge"),
                      (translate, "python -m training.translator.translate"),
                      (real_life, "python -m training.mnist.real_life")):
        assert help_text(run, ["--help"], capsys).startswith(f"usage: {prog} ")
