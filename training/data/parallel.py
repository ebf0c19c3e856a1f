"""Parallel German-English text: the corpus type every translator job uses,
and a loader for plain parallel files (one sentence per line, as Sockeye and
fairseq use), so a real corpus (WMT, Europarl) can replace the dictionary.

    DIR/train.de  DIR/train.en     line i of .de translates to line i of .en
    DIR/valid.de  DIR/valid.en
    DIR/test.de   DIR/test.en
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

Pair = tuple[str, str]  # (German, English)
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class ParallelCorpus:
    """Sentence pairs per split; `extra_train` (phrase pairs) is training-only."""

    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]
    source: str
    extra_train: list[Pair] = field(default_factory=list)
    # Checksums of the files the corpus was read from, e.g. {"trans-de-en.deb": "..."}.
    checksums: dict[str, str] = field(default_factory=dict)
    split_rule: str = ""

    def sizes(self) -> dict[str, int]:
        return {"train_sentences": len(self.train), "train_phrases": len(self.extra_train),
                "valid": len(self.valid), "test": len(self.test)}

    def sha256(self) -> str:
        """Digest of the pairs themselves, split by split (independent of file layout)."""
        digest = hashlib.sha256()
        for name in ("train", "extra_train", "valid", "test"):
            digest.update(f"{name}\n".encode())
            for de, en in getattr(self, name):
                digest.update(f"{de}\t{en}\n".encode())
        return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_pairs(de_path: Path, en_path: Path) -> list[Pair]:
    """Line-aligned pairs; blank pairs are skipped, a line-count mismatch is an error."""
    de_lines = de_path.read_text(encoding="utf-8").splitlines()
    en_lines = en_path.read_text(encoding="utf-8").splitlines()
    if len(de_lines) != len(en_lines):
        raise ValueError(f"{de_path} has {len(de_lines)} lines but {en_path} has {len(en_lines)}")
    return [(de.strip(), en.strip()) for de, en in zip(de_lines, en_lines)
            if de.strip() and en.strip()]


def load_parallel_dir(directory: Path) -> ParallelCorpus:
    """Read `{train,valid,test}.{de,en}` from `directory`; the user's split is kept as is."""
    splits: dict[str, list[Pair]] = {}
    checksums: dict[str, str] = {}
    for split in SPLITS:
        paths = [directory / f"{split}.{lang}" for lang in ("de", "en")]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"parallel corpus lacks {missing}")
        splits[split] = read_pairs(*paths)
        for path in paths:
            checksums[path.name] = file_sha256(path)
    return ParallelCorpus(splits["train"], splits["valid"], splits["test"],
                          source=f"parallel files in {directory}", checksums=checksums,
                          split_rule="as given by the files {train,valid,test}.{de,en}")
