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


def photos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)


def time_photos(folder: Path, out: Path, calls: int) -> None:
    """Child side: time prepare_digit of whichever tensorgate is on the path; write the mean ms
    per call of each photo it prepares to out/times.json, what it refuses (name: the error) to
    out/refused.json and the prepared inputs to out/inputs.npz."""
    import numpy as np

    from tensorgate.digits import DigitImageError, prepare_digit

    times, refused, inputs = {}, {}, {}
    for photo in photos_in(folder):
        data = photo.read_bytes()
        try:
            inputs[photo.name] = prepare_digit(data)  # also the warm-up
        except DigitImageError as err:
            refused[photo.name] = f"{type(err).__name__}: {err}"
            continue
        start = time.process_time()
        for _ in range(calls):
            prepare_digit(data)
        times[photo.name] = (time.process_time() - start) / calls * 1000
    (out / "times.json").write_text(json.dumps(times))
    (out / "refused.json").write_text(json.dumps(refused))
    np.savez(out / "inputs.npz", **inputs)  # type: ignore[arg-type]  # numpy stubs match **kwds to allow_pickle


# The child runs this file by path, from `-c` so that bench/ (whose profile.py would shadow the
# standard library's) is not first on its path, with the side's checkout on PYTHONPATH.
CHILD = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def run_side(tree: Path, folder: Path, out: Path, calls: int) -> dict[str, float]:
    from bench.ab import side_env

    out.mkdir(parents=True, exist_ok=True)
    env = {**side_env(tree), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", CHILD, str(Path(__file__).resolve()), "--time-into", str(out),
                    "--calls", str(calls), "--folder", str(folder.resolve())], cwd=tree, env=env, check=True)
    times: dict[str, float] = json.loads((out / "times.json").read_text())
    return times


def differences(a: Path, b: Path) -> list[str]:
    """Photos whose prepared inputs are not the same bytes (dtype and shape included) on two
    sides, or that one side refuses and the other does not (or refuses otherwise)."""
    import numpy as np

    refused_a, refused_b = (json.loads((side / "refused.json").read_text()) for side in (a, b))
    differ = sorted(n for n in set(refused_a) | set(refused_b) if refused_a.get(n) != refused_b.get(n))
    with np.load(a / "inputs.npz") as x, np.load(b / "inputs.npz") as y:
        for name in sorted(set(x.files) & set(y.files)):
            u, v = x[name], y[name]
            if u.dtype != v.dtype or u.shape != v.shape or u.tobytes() != v.tobytes():
                differ.append(name)
    return differ


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
    if not photos_in(args.folder):
        parser.error(f"no photos ({', '.join(sorted(SUFFIXES))}) in {args.folder}")
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
            differ = differences(tmp / f"{sides[0][0].replace(' ', '_')}-0", tmp / "this_checkout-0") if args.base else []
            refused = json.loads((tmp / "this_checkout-0" / "refused.json").read_text())
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
    if refused:
        print(f"\nRefused by this checkout (not timed): {len(refused)}, e.g. {next(iter(refused.items()))}")
    if args.base:
        print("\n" + ("The same prepared inputs (and refusals) on both sides, bit for bit." if not differ
                      else f"Prepared inputs differ for: {', '.join(differ)}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
