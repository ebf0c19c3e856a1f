"""Running a server process: logging, settings from env overridden by flags, and a clean
drain on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pydantic_settings import BaseSettings


class App(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def failed(self) -> asyncio.Future[Any] | None:
        """A task whose end means the process must stop (None if there is none)."""
        ...


def _parser(settings_cls: type[BaseSettings], prog: str, description: str, flags: dict[str, str]) -> argparse.ArgumentParser:
    """argparse flags for some settings fields; help comes from each field's description.

    `flags` maps a flag name (without --) to the settings field it sets.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description + " Every setting can also come from the environment.")
    prefix = settings_cls.model_config.get("env_prefix", "")
    for flag, field in flags.items():
        info = settings_cls.model_fields[field]
        parser.add_argument(
            f"--{flag}", dest=field, default=None,
            help=f"{info.description} (env {prefix}{field.upper()}; default {info.get_default(call_default_factory=False)!s})",
        )
    parser.add_argument("--log-level", default="INFO", help="Logging level (DEBUG, INFO, WARNING).")
    return parser


S = TypeVar("S", bound=BaseSettings)


def main(
    settings_cls: type[S],
    make_app: Callable[[S], App],
    prog: str,
    description: str,
    flags: dict[str, str],
    argv: list[str] | None = None,
) -> int:
    """The whole of a server's `python -m`: flags over env settings, logging, serve until a signal."""
    args = _parser(settings_cls, prog, description, flags).parse_args(argv)
    setup_logging(args.log_level)
    settings = settings_cls(**{f: getattr(args, f) for f in flags.values() if getattr(args, f) is not None})

    async def serve() -> int:
        return await run_until_signal(make_app(settings))

    with asyncio.Runner(loop_factory=event_loop_factory(str(getattr(settings, "event_loop", "asyncio")))) as runner:
        return runner.run(serve())


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for, or (auto) when installed; None: asyncio's own."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# How often the frozen objects are looked at again: something built before a freeze that later
# became cyclic garbage (a model version unloaded since, a connection replaced) is collected then.
REFREEZE_S = 600.0


def settle_garbage_collector() -> None:
    """Once a server is up, what start-up built (modules, protobuf descriptors, sessions, the
    model) moves out of the collector's sight (gc.freeze): a full collection then walks only
    what came after. Without it the gateway at c=64 spent 0.24 s in nine full collections of
    27 ms each in 14 s, each one a pause for every request in flight (docs/profiles.md)."""
    gc.collect()
    gc.freeze()


async def refreeze_periodically(interval_s: float = REFREEZE_S) -> None:
    """Every `interval_s`, one full collection over everything, frozen objects included, then
    freeze again: one pause like the old full collections every ten minutes instead of every
    second or two, and nothing frozen stays garbage for longer."""
    while True:
        await asyncio.sleep(interval_s)
        gc.unfreeze()
        settle_garbage_collector()


async def run_until_signal(app: App) -> int:
    """Start, wait for SIGINT/SIGTERM (or a fatal task), drain, stop. Returns the exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    settle_garbage_collector()
    refreezing = asyncio.ensure_future(refreeze_periodically())
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    fatal = app.failed()
    if fatal is not None:
        waiters.append(fatal)
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if fatal is not None and fatal.done():
        logging.getLogger(__name__).error("stopping: %r", fatal.exception() if not fatal.cancelled() else "cancelled")
        code = 1
    refreezing.cancel()
    await app.stop()
    waiters[0].cancel()
    return code
