"""Print requirement lines from pyproject.toml, so the images install exactly what it pins.

    python requirements.py pyproject.toml cpu            -> the runtime dependencies + extra "cpu"
    python requirements.py pyproject.toml --only dev grpcio-tools
                                                         -> just that entry of the "dev" extra

Installing the dependencies before the source lets Docker cache that layer across code changes.
"""

from __future__ import annotations

import re
import sys
import tomllib


def main(argv: list[str]) -> int:
    with open(argv[0], "rb") as fh:
        project = tomllib.load(fh)["project"]
    extras = project.get("optional-dependencies", {})
    if len(argv) >= 2 and argv[1] == "--only":
        extra, names = argv[2], set(argv[3:])
        lines = [req for req in extras[extra] if re.split(r"[\s\[<>=~!;]", req, maxsplit=1)[0] in names]
        if len(lines) != len(names):
            sys.exit(f"not all of {sorted(names)} are in the {extra!r} extra of {argv[0]}")
    else:
        lines = list(project["dependencies"])
        for extra in argv[1:]:
            lines += extras[extra]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
