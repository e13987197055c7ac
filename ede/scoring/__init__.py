"""Batch scoring with an exported artifact: onnxruntime, pyarrow and fsspec, never torch."""
