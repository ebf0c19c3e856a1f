"""Print requirement lines from pyproject.toml: the ranges the lock files are made from.

    python requirements.py pyproject.toml cpu            -> the runtime dependencies + extra "cpu"
    python requirements.py pyproject.toml --only dev grpcio-tools
                                                         -> just that entry of the "dev" extra

The images install the pinned, hashed requirements-*.lock that lock.py writes from these lines.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirement_lines(pyproject: Path | str, spec: list[str]) -> list[str]:
    """The runtime dependencies plus the named extras, or with ["--only", EXTRA, NAME...] just those entries."""
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    extras = project.get("optional-dependencies", {})
    if spec and spec[0] == "--only":
        extra, names = spec[1], set(spec[2:])
        lines = [req for req in extras[extra] if re.split(r"[\s\[<>=~!;]", req, maxsplit=1)[0] in names]
        if len(lines) != len(names):
            sys.exit(f"not all of {sorted(names)} are in the {extra!r} extra of {pyproject}")
        return lines
    lines = list(project["dependencies"])
    for extra in spec:
        lines += extras[extra]
    return lines


def main(argv: list[str]) -> int:
    print("\n".join(requirement_lines(argv[0], argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
