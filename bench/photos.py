"""python -m bench.photos: CPU time of the classifiers' server-side photo preparation, per photo.

A request with `image_bytes` (a photo of a hand-written digit) costs the model service
tensorgate.digits.prepare_digit before the model runs; this times it on the example photos
(examples/), one core, in a child process per side. With `--base REV` it also times that commit
(checked out beside this one, as bench.ab does) in alternating rounds, and says whether the two
give the same 28 x 28 inputs, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "examples"
MAX_ROWS = 20  # photos listed one by one
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def time_photos(folder: Path, out: Path, calls: int) -> None:
    """Child side: time prepare_digit of whichever tensorgate is on the path; write the mean ms
    per call of each photo to out/times.json and its outputs to out/inputs.npz."""
    import numpy as np

    from tensorgate.digits import prepare_digit

    times, inputs = {}, {}
    for photo in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES):
        data = photo.read_bytes()
        inputs[photo.name] = prepare_digit(data)  # also the warm-up
        start = time.process_time()
        for _ in range(calls):
            prepare_digit(data)
        times[photo.name] = (time.process_time() - start) / calls * 1000
    (out / "times.json").write_text(json.dumps(times))
    np.savez(out / "inputs.npz", **inputs)  # type: ignore[arg-type]  # numpy stubs match **kwds to allow_pickle


def run_side(tree: Path, folder: Path, out: Path, calls: int) -> dict[str, float]:
    from bench.ab import side_env

    out.mkdir(parents=True, exist_ok=True)
    env = {**side_env(tree), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--time-into", str(out), "--calls", str(calls),
                    "--folder", str(folder.resolve())],
                   cwd=tree, env=env, check=True)
    times: dict[str, float] = json.loads((out / "times.json").read_text())
    return times


def same_inputs(a: Path, b: Path) -> list[str]:
    """Photos whose prepared inputs differ between two sides."""
    import numpy as np

    with np.load(a / "inputs.npz") as x, np.load(b / "inputs.npz") as y:
        return [name for name in x.files if not np.array_equal(x[name], y[name])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.photos", description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="also time this commit (e.g. HEAD~1), in alternating rounds")
    parser.add_argument("--folder", type=Path, default=PHOTOS, help="the photos (default examples/; "
                        "data/real_digits: the real-life set, python -m training.data.digit_photos)")
    parser.add_argument("--calls", type=int, default=20, help="calls per photo and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (medians are printed)")
    parser.add_argument("--time-into", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    if args.time_into:
        time_photos(args.folder, args.time_into, args.calls)
        return 0
    from bench.ab import worktree

    with tempfile.TemporaryDirectory(prefix="tensorgate-photos-") as tmp_name:
        tmp = Path(tmp_name)
        sides: list[tuple[str, Path]] = [("this checkout", ROOT)]
        if args.base:
            sides.insert(0, (args.base, worktree(args.base, tmp / "base")))
        try:
            runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in sides}
            for turn in range(args.rounds):
                for name, tree in (sides if turn % 2 == 0 else sides[::-1]):
                    runs[name].append(run_side(tree, args.folder, tmp / f"{name.replace(' ', '_')}-{turn}", args.calls))
            differ = same_inputs(tmp / f"{sides[0][0].replace(' ', '_')}-0", tmp / "this_checkout-0") if args.base else []
        finally:
            if args.base:
                subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "base")], cwd=ROOT, capture_output=True)
    names = list(runs[sides[-1][0]][0])
    median = {side: {n: statistics.median(r[n] for r in rounds) for n in names} for side, rounds in runs.items()}
    command = "python -m bench.photos" + (f" --base {args.base}" if args.base else "") + \
        (f" --folder {args.folder}" if args.folder != PHOTOS else "") + f" --calls {args.calls} --rounds {args.rounds}"
    print(f"`{command}`: CPU ms per photo (prepare_digit, one process, median of the rounds)\n")
    print("| photo | " + " | ".join(median) + (" | ratio |" if args.base else " |"))
    print("|---|" + "---:|" * (len(median) + (1 if args.base else 0)))
    shown = names if len(names) <= MAX_ROWS else []  # a large set: its total only
    for n in shown + [f"all {len(names)} photos"]:
        values = [m[n] if n in m else sum(m.values()) for m in median.values()]
        ratio = f" | ×{values[1] / values[0]:.2f}" if args.base else ""
        print(f"| {n} | " + " | ".join(f"{v:.1f}" for v in values) + ratio + " |")
    if args.base:
        print("\n" + ("The same prepared inputs on both sides, bit for bit." if not differ
                      else f"Prepared inputs differ for: {', '.join(differ)}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
