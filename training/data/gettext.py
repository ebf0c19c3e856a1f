"""German-English pairs from software translation catalogs (gettext .mo files).

Debian packages ship their German user-interface translations as compiled
gettext catalogs, `.../de/LC_MESSAGES/*.mo`: each English message (msgid)
next to its German translation (msgstr). That is real, human-translated
parallel text, reachable on machines that only reach Debian's packages; its
domain is software (menus, dialogs, error messages), not everyday speech.

    python -m training.data.gettext --out data/gettext

downloads the packages named by --packages with `apt-get download` (no root
needed), unpacks them with `dpkg -x`, reads every German catalog, cleans the
messages and writes line-aligned `train.de` / `train.en` plus `source.json`
(package files and their sha256, counts). The translator adds them to its
training data with `--extra-parallel data/gettext`.

Cleaning keeps messages a translator can learn from: keyboard mnemonics
(`_File`, `&File`, `~File`) are removed; messages with format placeholders
(`%s`, `{0}`, `$VAR`), markup, `|` contexts ("Persian month|Dey"), line
breaks, escapes or addresses are dropped, as are untranslated ones (German
equal to English) and messages of more than --max-words words. Plural
entries give their singular form; message contexts are dropped. Pairs are
deduplicated.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tqdm import tqdm

from training.data import debian
from training.data.parallel import Pair, file_sha256

# Debian 12 packages with large German catalogs: office, graphics, mail, media, desktop and
# system tools, and games whose catalogs hold narrative text (Wesnoth's campaigns, Freeciv).
WESNOTH_CAMPAIGNS = ("did", "dm", "dw", "ei", "httt", "l", "low", "nr", "sof", "sota", "sotbe",
                     "thot", "trow", "tsg", "ttb", "utbs")
PACKAGES = (
    "libreoffice-l10n-de", "inkscape", "gimp", "gimp-data", "vlc-l10n", "gnucash-common",
    "evolution-common", "evolution-data-server-common", "thunar", "gnome-control-center-data",
    "nautilus-data", "gparted", "kdenlive-data", "digikam-data", "krita-data", "okular",
    "scribus-data", "audacity-data", "coreutils", "tar", "grep", "sed", "bash", "apt",
    "dpkg", "util-linux-locales", "e2fsprogs", "gnupg-l10n", "gramps", "freeciv-data",
    "wesnoth-1.16-data", *(f"wesnoth-1.16-{c}" for c in WESNOTH_CAMPAIGNS),
)
MAGIC_LE, MAGIC_BE = 0x950412DE, 0xDE120495
_DROP = re.compile(r"%|\{|\}|\$|<|>|\||\n|\r|\t|\\|https?:|www\.|@")
_MNEMONIC = re.compile(r"(?<=\w)[_&~](?=\w)|(?<![\w&_~])[_&~](?=\w)")


def read_mo(data: bytes) -> Iterator[tuple[str, str]]:
    """The (msgid, msgstr) entries of a compiled gettext catalog, header excluded.

    Layout (GNU gettext manual, "The Format of GNU MO Files"): magic, revision,
    number of strings N, offset of the original-strings table, offset of the
    translations table; each table holds N (length, offset) pairs.
    """
    if len(data) < 20:
        raise ValueError("not a .mo file: too short")
    magic = struct.unpack("<I", data[:4])[0]
    if magic == MAGIC_LE:
        order = "<"
    elif magic == MAGIC_BE:
        order = ">"
    else:
        raise ValueError(f"not a .mo file: magic {magic:#x}")
    _, count, originals, translations = struct.unpack(order + "4I", data[4:20])
    for i in range(count):
        o_len, o_off = struct.unpack(order + "2I", data[originals + 8 * i: originals + 8 * i + 8])
        t_len, t_off = struct.unpack(order + "2I",
                                     data[translations + 8 * i: translations + 8 * i + 8])
        msgid = data[o_off:o_off + o_len].decode("utf-8", errors="replace")
        msgstr = data[t_off:t_off + t_len].decode("utf-8", errors="replace")
        if not msgid:  # the header entry
            continue
        yield msgid, msgstr


def clean_message(text: str) -> str | None:
    """The message without mnemonics and context, or None when it should be dropped."""
    text = text.split("\x04", 1)[-1].split("\x00", 1)[0]  # context; plural forms
    if _DROP.search(text):
        return None
    text = _MNEMONIC.sub("", text).replace("…", "...").strip()
    text = " ".join(text.split())
    if not any(ch.isalpha() for ch in text):
        return None
    return text


def catalog_pairs(entries: Iterable[tuple[str, str]], max_words: int = 40) -> list[Pair]:
    """Cleaned (German, English) pairs of one catalog's (msgid, msgstr) entries."""
    pairs: list[Pair] = []
    for msgid, msgstr in entries:
        en, de = clean_message(msgid), clean_message(msgstr)
        if en is None or de is None or en == de or len(en.split()) > max_words:
            continue
        pairs.append((de, en))
    return pairs


def find_catalogs(root: Path, locale: str = "de") -> list[Path]:
    """German catalogs under `root` (`de` and regional `de_*` folders), sorted."""
    found = [p for p in root.rglob("*.mo")
             if p.parent.name == "LC_MESSAGES"
             and (p.parent.parent.name == locale or p.parent.parent.name.startswith(locale + "_"))]
    return sorted(found)


def fetch_packages(cache: Path, packages: Sequence[str], quiet: bool = False
                   ) -> tuple[Path, dict[str, str]]:
    """Download and unpack `packages` under `cache`; return the unpacked root and
    {deb file name: sha256}. Packages apt cannot fetch are reported and skipped."""
    root = cache / "unpacked"
    shutil.rmtree(root, ignore_errors=True)
    checksums: dict[str, str] = {}
    for package in tqdm(packages, desc="packages", unit="pkg", disable=quiet):
        try:
            deb = debian.download(package, cache / "debs")
        except RuntimeError as error:
            tqdm.write(f"skipped {package}: {error}")
            continue
        debian.unpack(deb, root)
        checksums[deb.name] = file_sha256(deb)
    return root, checksums


def build(out: Path, packages: Sequence[str], max_words: int = 40, quiet: bool = False
          ) -> dict[str, object]:
    """Fetch, extract and write `out/train.{de,en}`; returns what `source.json` records."""
    out.mkdir(parents=True, exist_ok=True)
    root, checksums = fetch_packages(out, packages, quiet)
    pairs: dict[Pair, None] = {}
    catalogs = find_catalogs(root)
    for path in catalogs:
        try:
            pairs.update(dict.fromkeys(catalog_pairs(read_mo(path.read_bytes()), max_words)))
        except ValueError as error:
            tqdm.write(f"skipped {path}: {error}")
    (out / "train.de").write_text("".join(de + "\n" for de, _ in pairs), encoding="utf-8")
    (out / "train.en").write_text("".join(en + "\n" for _, en in pairs), encoding="utf-8")
    record: dict[str, object] = {
        "packages": checksums, "catalogs": len(catalogs), "pairs": len(pairs),
        "english_words": sum(len(en.split()) for _, en in pairs), "max_words": max_words,
        "train.de": file_sha256(out / "train.de"), "train.en": file_sha256(out / "train.en")}
    (out / "source.json").write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    return record


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.data.gettext", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("data/gettext"),
                   help="folder for the .debs, train.de/train.en and source.json "
                        "(default: data/gettext)")
    p.add_argument("--packages", nargs="+", default=list(PACKAGES),
                   help="Debian packages to read German catalogs from (default: a list of "
                        f"{len(PACKAGES)} with large ones)")
    p.add_argument("--max-words", type=int, default=40,
                   help="drop messages longer than this many English words (default: 40)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    record = build(args.out, args.packages, args.max_words, args.quiet)
    print(json.dumps({k: v for k, v in record.items() if k != "packages"}, indent=1))


if __name__ == "__main__":
    main()
