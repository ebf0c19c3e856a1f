"""Pairs from gettext catalogs, and the translator's --extra-parallel data."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from training.data import debian, gettext
from training.translator import train


def make_mo(entries: dict[str, str], big_endian: bool = False) -> bytes:
    """A compiled catalog as msgfmt writes it (header entry first, no hash table)."""
    order = ">" if big_endian else "<"
    items = sorted({"": "Content-Type: text/plain; charset=UTF-8\n", **entries}.items())
    ids = [k.encode() for k, _ in items]
    strs = [v.encode() for _, v in items]
    start = 28 + 16 * len(items)
    blob, id_table, str_table = b"", [], []
    for table, texts in ((id_table, ids), (str_table, strs)):
        for text in texts:
            table.append((len(text), start + len(blob)))
            blob += text + b"\0"
    header = struct.pack(order + "7I", 0x950412DE, 0, len(items), 28, 28 + 8 * len(items), 0, 0)
    tables = b"".join(struct.pack(order + "2I", *e) for e in id_table + str_table)
    return header + tables + blob


ENTRIES = {
    "_Open File": "Datei ö_ffnen",
    "&Quit the program.": "Programm &beenden.",
    "Save ~As": "Speichern ~unter",
    "Cannot open %s": "%s kann nicht geöffnet werden",
    "Hello {name}": "Hallo {name}",
    "<b>Bold</b>": "<b>Fett</b>",
    "Two\nlines": "Zwei\nZeilen",
    "Persian month lexeme|Dey": "Déi",
    "menu\x04Edit": "Bearbeiten",
    "One file\x00%d files": "Eine Datei\x00%d Dateien",
    "File\x00Files": "Datei\x00Dateien",
    "Untranslated": "",
    "OK": "OK",
    "123": "123",
    "See https://example.org": "Siehe https://example.org",
    "The dog came out from under the table.": "Der Hund kam unter dem Tisch hervor.",
}
EXPECTED = [("Datei öffnen", "Open File"), ("Programm beenden.", "Quit the program."),
            ("Speichern unter", "Save As"), ("Bearbeiten", "Edit"), ("Datei", "File"),
            ("Eine Datei", "One file"),  # a plural entry's singular, placeholder-free here
            ("Der Hund kam unter dem Tisch hervor.", "The dog came out from under the table.")]


@pytest.mark.parametrize("big_endian", [False, True])
def test_read_mo_gives_every_entry_but_the_header(big_endian: bool) -> None:
    entries = dict(gettext.read_mo(make_mo(ENTRIES, big_endian)))
    assert entries == ENTRIES
    with pytest.raises(ValueError, match="magic"):
        list(gettext.read_mo(b"\0" * 40))
    with pytest.raises(ValueError, match="too short"):
        list(gettext.read_mo(b"\x95"))


def test_cleaning_keeps_learnable_messages_only() -> None:
    pairs = gettext.catalog_pairs(gettext.read_mo(make_mo(ENTRIES)))
    assert sorted(pairs) == sorted(EXPECTED)
    assert gettext.clean_message("Rock & Roll") == "Rock & Roll"  # not a mnemonic
    assert gettext.clean_message("Loading…") == "Loading..."
    long = " ".join(["word"] * 41)
    assert gettext.catalog_pairs([(long, long.upper())]) == []
    assert gettext.catalog_pairs([(long, long.upper())], max_words=41) != []


def test_build_writes_aligned_files_from_german_catalogs(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    for locale, name in (("de", "app.mo"), ("de_AT", "other.mo"), ("fr", "app.mo")):
        folder = root / "usr/share/locale" / locale / "LC_MESSAGES"
        folder.mkdir(parents=True)
        (folder / name).write_bytes(make_mo(ENTRIES if locale != "de_AT" else
                                            {"Close": "Schließen", "Edit": "Bearbeiten"}))
    (root / "usr/share/locale/de/LC_MESSAGES/broken.mo").write_bytes(b"not a catalog at all!")
    monkeypatch.setattr(gettext, "fetch_packages",
                        lambda out, packages, quiet=False: (root, {"app_1.0_all.deb": "abc"}))
    record = gettext.build(tmp_path / "out", ["app"], quiet=True)
    de = (tmp_path / "out" / "train.de").read_text().splitlines()
    en = (tmp_path / "out" / "train.en").read_text().splitlines()
    assert sorted(zip(de, en)) == sorted(EXPECTED + [("Schließen", "Close")])  # deduplicated
    assert record["catalogs"] == 3 and record["pairs"] == len(de) == 8
    assert record["packages"] == {"app_1.0_all.deb": "abc"}
    assert (tmp_path / "out" / "source.json").is_file()


def test_extra_parallel_pairs_are_training_only(tmp_path: Path) -> None:
    base = train.load_corpus(train.parse_args(["--dry-run", "--synthetic"]))
    held_de, held_en = base.valid[0]
    extra = [("Ein ganz neuer Satz.", "A brand new sentence."),
             (held_de.upper() + " ", "a copy of a validation sentence")]
    (tmp_path / "train.de").write_text("".join(de + "\n" for de, _ in extra))
    (tmp_path / "train.en").write_text("".join(en + "\n" for _, en in extra))
    corpus = train.load_corpus(train.parse_args(["--dry-run", "--synthetic",
                                                 "--extra-parallel", str(tmp_path)]))
    assert ("Ein ganz neuer Satz.", "A brand new sentence.") in corpus.extra_train
    assert all(en != "a copy of a validation sentence" for _, en in corpus.extra_train)
    assert corpus.valid == base.valid and corpus.test == base.test and corpus.train == base.train
    assert f"{tmp_path.name}/train.de" in corpus.checksums and "1 pairs from" in corpus.source


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)")
def test_fetch_builds_from_real_debs_through_apt_get(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in `apt-get` serves a package built with dpkg-deb, but only after
    `apt-get update` (a fresh machine's first download fails); a missing package is skipped."""
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: app\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test\n")
    catalog = tree / "usr/share/locale/de/LC_MESSAGES"
    catalog.mkdir(parents=True)
    (catalog / "app.mo").write_bytes(make_mo(ENTRIES))
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["dpkg-deb", "--build", str(tree), str(repo / "app_1.0_all.deb")], check=True,
                   capture_output=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(f"""#!/bin/sh
case "$1" in
  update) touch "{tmp_path}/updated" ;;
  download)
    if [ -f "{tmp_path}/updated" ] && [ -f "{repo}/$2_1.0_all.deb" ]; then
      cp "{repo}/$2_1.0_all.deb" . ; else echo "E: Unable to locate package $2" >&2; exit 100; fi ;;
esac
""")
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    record = gettext.build(tmp_path / "out", ["app", "missing"], quiet=True)
    assert list(record["packages"]) == ["app_1.0_all.deb"]  # type: ignore[call-overload]
    assert record["pairs"] == len(EXPECTED) and (tmp_path / "updated").exists()
    assert not (tmp_path / "out" / "unpacked").exists()  # only the .debs and the pairs stay
    with pytest.raises(RuntimeError, match="Unable to locate package missing"):
        debian.download("missing", tmp_path / "elsewhere")
