"""Debian packages as a data source: `apt-get download` (no root needed) and `dpkg -x`.

Machines that reach nothing but the package registries can still fetch a
package's files this way; the Ding dictionary and the gettext catalogs do.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def download(package: str, folder: Path) -> Path:
    """The package's .deb in `folder`, downloaded unless one is there already. When the
    download fails, `apt-get update` runs once and it is tried again (a fresh machine has
    no package lists). Raises RuntimeError with apt's message if there is still none."""
    folder.mkdir(parents=True, exist_ok=True)

    def found() -> Path | None:
        debs = sorted(folder.glob(f"{package}_*.deb"))
        return debs[-1] if debs else None

    deb, message = found(), ""
    for refresh in (False, True):
        if deb is not None:
            return deb
        if refresh:
            run(["apt-get", "update"], folder)
        done = run(["apt-get", "download", package], folder)
        deb, message = found(), done.stderr.strip() or done.stdout.strip()
    if deb is None:
        raise RuntimeError(f"apt-get download {package} failed: {message or 'no .deb written'}")
    return deb


def unpack(deb: Path, target: Path) -> None:
    """`dpkg -x`: the package's files under `target` (merged with what is there)."""
    target.mkdir(parents=True, exist_ok=True)
    done = run(["dpkg", "-x", str(deb.resolve()), str(target.resolve())], target)
    if done.returncode != 0:
        raise RuntimeError(f"dpkg -x {deb} failed: {done.stderr.strip()}")
