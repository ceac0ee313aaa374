"""The bundled model zoo: recipes that build ONNX models from packages that ship weights."""
