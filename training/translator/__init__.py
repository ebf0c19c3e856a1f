"""The German-English translator: a sequence-to-sequence model exported as an encoder and a decoder step.

    python -m training.translator ...             # train and publish models/translator_de_en (train.py)
    python -m training.translator.translate ...   # translate with the exported model (ONNX Runtime)
"""
