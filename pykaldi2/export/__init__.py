"""Exporting trained models: self-contained model directories (:mod:`.model_dir`), ONNX,
TorchScript."""
