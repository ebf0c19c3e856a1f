"""A tiny generated German-English corpus for tests and dry runs (no network).

Template sentences ("Der Hund sieht die Katze." / "The dog sees the cat."),
enumerated in a fixed order, so the corpus is the same on every machine.
"""

from __future__ import annotations

from itertools import product

from training.data.parallel import Pair, ParallelCorpus

_SUBJECTS = [("Der Hund", "The dog"), ("Die Katze", "The cat"), ("Der Mann", "The man"),
             ("Die Frau", "The woman"), ("Das Kind", "The child"), ("Mein Bruder", "My brother")]
_VERBS = [("sieht", "sees"), ("mag", "likes"), ("hört", "hears"), ("sucht", "looks for"),
          ("findet", "finds")]
_OBJECTS = [("den Ball", "the ball"), ("das Haus", "the house"), ("den Baum", "the tree"),
            ("die Blume", "the flower"), ("das Buch", "the book"), ("den Tisch", "the table")]
_ENDS = [(".", "."), (" heute.", " today."), (" nicht.", " not.")]


def synthetic_corpus(valid: int = 12, test: int = 12) -> ParallelCorpus:
    pairs: list[Pair] = []
    for (sd, se), (vd, ve), (od, oe), (ed, ee) in product(_SUBJECTS, _VERBS, _OBJECTS, _ENDS):
        if ee == " not.":  # "The dog does not see the ball." is beyond a template; keep it simple
            pairs.append((f"{sd} {vd} {od}{ed}", f"{se} {ve} {oe} no more."))
        else:
            pairs.append((f"{sd} {vd} {od}{ed}", f"{se} {ve} {oe}{ee}"))
    # Every 7th pair is held out (valid, then test); the rest trains.
    held = pairs[::7]
    train = [p for i, p in enumerate(pairs) if i % 7]
    phrases = [(d, e) for d, e in _SUBJECTS + _OBJECTS]
    return ParallelCorpus(train, held[:valid], held[valid:valid + test],
                          source="synthetic template sentences (training.translator.synthetic)",
                          extra_train=phrases, split_rule="every 7th template pair is held out")
