"""imaas: image models as a service.

Serve, version and benchmark ONNX vision models over REST, a CLI and a Python SDK.
Importing the package does no work: settings, databases and threads are created at the edges.
"""

__version__ = "0.1.0"
