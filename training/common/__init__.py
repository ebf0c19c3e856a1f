"""Pieces every training job shares: checkpoints, ONNX export, model cards, plots, repository entries."""
