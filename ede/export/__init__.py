"""From a fitted model to what ships: ONNX artifacts, calibration, model folders, the registry."""
