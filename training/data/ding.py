"""The Ding German-English dictionary (Debian package `trans-de-en`, GPL-2+)
as sentence pairs and phrase pairs, with a fixed held-out split.

Fetch: `apt-get download trans-de-en` into the cache folder (after an
`apt-get update` when the first try fails), `dpkg -x` it, record the .deb's
and the dictionary file's SHA-256 in `<cache>/source.json`.

Parse: each line is `German :: English`; both sides split by ` | ` into
aligned sub-entries (a line whose sides have different counts is skipped).
In a sub-entry, markup is removed (`{m}` `{pl}` `{vt}` `{prp; +Dat.}` ...,
`[Br.]` `[ugs.]` `[fig.]` ..., `<alternative spellings>`, and parenthesised
asides such as `(ursprünglich)`, which are optional words), `a/b`
alternatives keep the first, then `;` separates synonyms. Synonyms are
paired by position when both sides have the same number of them, else only
the first German with the first English (the first are the most common
wording; any other pairing would invent translations).

A pair is a *sentence* when the German ends in `.`, `!` or `?` and has three
or more words and the English ends in one of those too; everything else is
a *phrase* pair, used for training only.

Split rule (no RNG): sentence pairs are grouped by normalised German
(NFKC, casefolded, letters and digits only); groups are ordered by the
SHA-256 of that key; the first 1,000 groups are test, the next 1,000
validation, the rest training. A held-out group contributes one pair (its
first in file order) as the reference; training keeps every pair of its
groups. Phrase pairs whose normalised German equals a held-out key are dropped.

    python -m training.data.ding [--data-dir data/ding]   # fetch + print split sizes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

from training.data import debian
from training.data.parallel import Pair, ParallelCorpus, file_sha256

PACKAGE = "trans-de-en"
DICT_MEMBER = Path("usr/share/trans/de-en")
# Observed for trans-de-en 1.9-6 (Debian bookworm); a newer package is
# accepted, its checksums are recorded in source.json and the model card.
KNOWN_DEB_SHA256 = {"trans-de-en_1.9-6_all.deb":
                    "45f6b4cf1c434776fba6811d7bc522efabb5425c43ba8afd0e289bf9e2e53df4"}
TEST_SIZE = VALID_SIZE = 1000
SPLIT_RULE = ("group sentence pairs by normalised German (NFKC, casefold, letters/digits "
              "only); order groups by sha256 of that key; first 1000 groups = test, next "
              "1000 = valid, rest = train; a held-out group keeps its first pair in file "
              "order; phrase pairs go to train only, minus those whose German matches a "
              "held-out key")

_MARKUP = re.compile(r"\{[^}]*\}|\[[^\]]*\]|<[^>]*>|\([^)]*\)")
_SLASH = re.compile(r"(\w+)(?:/\w+)+")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:])")
_SENTENCE_END = ("." , "!", "?")


def clean(text: str) -> str:
    """Strip Ding markup and alternatives from one sub-entry (before splitting on ';')."""
    text = _MARKUP.sub(" ", text)
    text = _SLASH.sub(r"\1", text)
    text = _SPACES.sub(" ", text).strip()
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def synonyms(sub_entry: str) -> list[str]:
    return [s.strip() for s in clean(sub_entry).split(";") if s.strip()]


def is_sentence(de: str, en: str) -> bool:
    return (de.endswith(_SENTENCE_END) and len(de.split()) >= 3
            and en.endswith(_SENTENCE_END))


def parse_lines(lines: Iterable[str]) -> tuple[list[Pair], list[Pair]]:
    """Dictionary lines -> (sentence pairs, phrase pairs), in file order, deduplicated."""
    sentences: dict[Pair, None] = {}
    phrases: dict[Pair, None] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or " :: " not in line:
            continue
        german, english = line.split(" :: ", 1)
        de_subs, en_subs = german.split(" | "), english.split(" | ")
        if len(de_subs) != len(en_subs):
            continue
        for de_sub, en_sub in zip(de_subs, en_subs):
            de_syn, en_syn = synonyms(de_sub), synonyms(en_sub)
            if not de_syn or not en_syn:
                continue
            pairs = list(zip(de_syn, en_syn)) if len(de_syn) == len(en_syn) \
                else [(de_syn[0], en_syn[0])]
            for de, en in pairs:
                (sentences if is_sentence(de, en) else phrases)[(de, en)] = None
    return list(sentences), list(phrases)


def normalise(german: str) -> str:
    text = unicodedata.normalize("NFKC", german).casefold()
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text).split())


def split_sentences(sentences: Sequence[Pair], phrases: Sequence[Pair],
                    test_size: int = TEST_SIZE, valid_size: int = VALID_SIZE,
                    source: str = "", checksums: dict[str, str] | None = None
                    ) -> ParallelCorpus:
    """The fixed split described in the module docstring."""
    groups: dict[str, list[Pair]] = {}
    for pair in sentences:
        groups.setdefault(normalise(pair[0]), []).append(pair)
    if len(groups) <= test_size + valid_size:
        raise ValueError(f"only {len(groups)} distinct German sentences; need more than "
                         f"{test_size + valid_size}")
    keys = sorted(groups, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    test_keys, valid_keys = keys[:test_size], keys[test_size:test_size + valid_size]
    held_out = set(test_keys) | set(valid_keys)
    train = [pair for pair in sentences if normalise(pair[0]) not in held_out]
    extra = [pair for pair in phrases if normalise(pair[0]) not in held_out]
    # Held-out pairs in file order, so the test file reads like the dictionary.
    first = {key: groups[key][0] for key in held_out}
    order = {pair: i for i, pair in enumerate(sentences)}
    test = sorted((first[k] for k in test_keys), key=order.__getitem__)
    valid = sorted((first[k] for k in valid_keys), key=order.__getitem__)
    return ParallelCorpus(train, valid, test, source=source, extra_train=extra,
                          checksums=dict(checksums or {}), split_rule=SPLIT_RULE)


def fetch_ding(cache: Path) -> tuple[Path, dict[str, str]]:
    """Make sure `<cache>/de-en` exists; return it and the checksums of the
    .deb it came from and of the file itself."""
    cache.mkdir(parents=True, exist_ok=True)
    target, record = cache / "de-en", cache / "source.json"
    if target.is_file() and record.is_file():
        return target, json.loads(record.read_text())
    deb = debian.download(PACKAGE, cache)
    unpacked = cache / "unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    debian.unpack(deb, unpacked)
    shutil.copyfile(unpacked / DICT_MEMBER, target)
    shutil.rmtree(unpacked)
    checksums = {deb.name: file_sha256(deb), "de-en": file_sha256(target)}
    known = KNOWN_DEB_SHA256.get(deb.name)
    if known is not None and known != checksums[deb.name]:
        raise ValueError(f"{deb.name}: sha256 {checksums[deb.name]} != pinned {known}")
    record.write_text(json.dumps(checksums, indent=1) + "\n")
    return target, checksums


def load_ding(cache: Path, dictionary: Path | None = None) -> ParallelCorpus:
    """Fetch (unless `dictionary` is given), parse and split."""
    if dictionary is None:
        dictionary, checksums = fetch_ding(cache)
    else:
        checksums = {dictionary.name: file_sha256(dictionary)}
    with dictionary.open(encoding="utf-8") as handle:
        sentences, phrases = parse_lines(handle)
    return split_sentences(sentences, phrases, checksums=checksums,
                           source=f"Ding dictionary, Debian package {PACKAGE} ({dictionary})")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.data.ding", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/ding"),
                   help="cache folder for the .deb and the dictionary (default: data/ding)")
    args = p.parse_args(argv)
    corpus = load_ding(args.data_dir)
    print(json.dumps({"sizes": corpus.sizes(), "checksums": corpus.checksums,
                      "sha256": corpus.sha256()}, indent=1))


if __name__ == "__main__":
    main()
