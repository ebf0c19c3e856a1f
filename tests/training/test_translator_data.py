"""Ding parsing and splitting, the parallel-file loader, and the batching."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.ding import clean, normalise, parse_lines, split_sentences
from training.data.parallel import load_parallel_dir
from training.translator.batching import collate, make_batches
from training.translator.vocab import BOS_ID, EOS_ID, PAD_ID

SAMPLE = """\
# Version :: devel 2023-01-30
Aal {m} [cook.] | Aale {pl} :: eel | eels
von; aus {prp; +Dat.} | Der Hund kam unter dem Tisch hervor. | Woher kommst du? [ugs.] :: from | The dog came out from under the table. | Where are you from?; Where do you come from?
Ahnung {f} | Ich habe keine Ahnung. | keine Ahnung :: notion | I have no idea. | no idea
Anhaltspunkt {m} | Ich habe keine Ahnung! :: clue | I haven’t a clue!
Beispiel {n} | Das ist ein gutes Beispiel [Br.]. :: example | This is a good example [Br.].
kaputt {adj} [ugs.] | Meine Familie kommt (ursprünglich) aus Slowenien. :: broken [coll.] | My family is/comes (originally) from Slovenia.
Ungleich | zwei | Teile :: unequal | parts
"""


def test_clean_strips_markup_and_alternatives() -> None:
    assert clean("Aal {m} [cook.] <Aalfisch>") == "Aal"
    assert clean("My family is/comes (originally) from Slovenia.") == "My family is from Slovenia."
    assert clean("Das ist ein gutes Beispiel [Br.].") == "Das ist ein gutes Beispiel."
    assert clean("aus {prp; +Dat.}") == "aus"  # the ';' inside braces is not a synonym break


def test_sentences_and_phrases() -> None:
    sentences, phrases = parse_lines(SAMPLE.splitlines())
    assert ("Der Hund kam unter dem Tisch hervor.", "The dog came out from under the table.") \
        in sentences
    assert ("Ich habe keine Ahnung.", "I have no idea.") in sentences
    assert ("Meine Familie kommt aus Slowenien.", "My family is from Slovenia.") in sentences
    assert ("Das ist ein gutes Beispiel.", "This is a good example.") in sentences
    # one German synonym, two English ones: the first with the first
    assert ("Woher kommst du?", "Where are you from?") in sentences
    assert ("keine Ahnung", "no idea") in phrases  # two words: not a sentence
    assert ("Aal", "eel") in phrases and ("Aale", "eels") in phrases
    assert ("von", "from") in phrases  # German synonyms "von; aus" vs one English: first only
    assert not any(de.startswith(("Ungleich", "zwei")) for de, _ in sentences + phrases)
    assert all("{" not in de + en and "[" not in de + en for de, en in sentences + phrases)


def _many_sentences(n: int) -> list[tuple[str, str]]:
    pairs = [(f"Der Satz Nummer {i} ist hier.", f"Sentence number {i} is here.") for i in range(n)]
    # Same German (up to case and punctuation) with another English: one group.
    pairs += [(f"der Satz Nummer {i} ist hier!", f"Here is sentence {i}.") for i in range(0, n, 5)]
    return pairs


def test_split_is_disjoint_by_normalised_german_and_deterministic() -> None:
    sentences = _many_sentences(300)
    phrases = [("Satz Nummer 7 ist hier", "phrase"), ("Wort", "word")]
    corpus = split_sentences(sentences, phrases, test_size=40, valid_size=30)
    assert (len(corpus.test), len(corpus.valid)) == (40, 30)
    keys = {name: {normalise(de) for de, _ in getattr(corpus, name)}
            for name in ("train", "valid", "test")}
    assert not keys["train"] & keys["valid"] and not keys["train"] & keys["test"]
    assert not keys["valid"] & keys["test"]
    assert len(corpus.train) == len(sentences) - 70 - sum(
        1 for de, _ in sentences[300:] if normalise(de) in keys["valid"] | keys["test"])
    # Phrases are training only, and never a held-out sentence's German.
    assert ("Wort", "word") in corpus.extra_train
    # Same input in another order: same split (hash, not RNG).
    again = split_sentences(list(reversed(sentences)), phrases, test_size=40, valid_size=30)
    assert {normalise(de) for de, _ in again.test} == keys["test"]
    assert corpus.sha256() == split_sentences(sentences, phrases, 40, 30).sha256()


def test_parallel_dir_loader(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        (tmp_path / f"{split}.de").write_text("".join(f"Satz {i}.\n" for i in range(n)))
        (tmp_path / f"{split}.en").write_text("".join(f"Sentence {i}.\n" for i in range(n)))
    corpus = load_parallel_dir(tmp_path)
    assert corpus.sizes() == {"train_sentences": 3, "train_phrases": 0, "valid": 2, "test": 1}
    assert corpus.train[2] == ("Satz 2.", "Sentence 2.") and "test.de" in corpus.checksums
    (tmp_path / "test.en").write_text("a\nb\n")
    with pytest.raises(ValueError, match="lines"):
        load_parallel_dir(tmp_path)


def test_batches_respect_token_budget_and_buckets() -> None:
    pairs = [([5] * (i % 23 + 1), [6] * ((i * 7) % 31 + 1)) for i in range(500)]
    batches = make_batches(pairs, batch_tokens=120, bucket_width=4)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for members in batches:
        widths = {-(-(len(pairs[i][1]) + 1) // 4) for i in members}
        sources = {-(-(len(pairs[i][0]) + 1) // 4) for i in members}
        assert len(widths) == 1 and len(sources) == 1  # one bucket per batch
        assert len(members) * max(len(pairs[i][1]) + 1 for i in members) <= 120
    batch = collate([([7, 8], [9]), ([7], [9, 10, 11])])
    assert batch.src.tolist() == [[7, 8, EOS_ID], [7, EOS_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 9, PAD_ID, PAD_ID], [BOS_ID, 9, 10, 11]]
    assert batch.tgt_out.tolist() == [[9, EOS_ID, PAD_ID, PAD_ID], [9, 10, 11, EOS_ID]]
    assert batch.src_mask.tolist() == [[1, 1, 1], [1, 1, 0]] and batch.target_tokens == 6
