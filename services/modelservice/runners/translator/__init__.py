"""The German -> English translator: its runner and the runtime under it, one module a concept.

    runner.py       TranslatorModel, the model service's runner (`runner: "translator"`)
    decode_loop.py  the thread that owns a running batch and answers each request when it is done
    admission.py    how many requests the runner takes in, and which decode loop takes each
    translator.py   Translator: the model folder (manifest, sentencepiece, the two ONNX graphs)
                    and the in-process search the training job and bench/ call
    scheduler.py    the running batch: sentences join and leave it at any decoder step
    search.py       the beam search step over every live beam (scores, finished hypotheses)
    rows.py         the decoder inputs per row, on the host
    device.py       the same rows kept on the execution provider's device (IO binding)
    fold.py         the decoder graph with the embedding's share of its input projection precomputed
    int8.py         the decoder's weight products in int8, a scale per row (decoder_precision: int8)
    graph_edit.py   what fold.py and int8.py share to rewrite a graph and probe the result
    timing.py       `python -m services.modelservice.runners.translator.timing`, a quick check

Only runner.py and timing.py import the model service's modules; the search (translator,
scheduler, search, rows, device, fold, int8, graph_edit) is numpy, sentencepiece and ONNX Runtime, so the training job
runs the very same code over its PyTorch model. No other runner imports this package.
"""

from services.modelservice.runners.translator.runner import TranslatorModel

__all__ = ["TranslatorModel"]
