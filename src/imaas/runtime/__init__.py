"""The inference engine: ONNX Runtime sessions, dynamic batching, task pre/post-processing."""
