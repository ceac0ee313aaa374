"""An ONNX Runtime inference session configured from settings.

ONNX Runtime releases the GIL inside ``run``, so several batches of one session can run
at once from different threads; with one intra-op thread each, two of them keep two cores
busy without the spinning threads that ONNX Runtime's defaults leave burning a core.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imaas.errors import InvalidModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionOptions:
    """What ONNX Runtime is told about threads and providers."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = False
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


class OnnxSession:
    """A loaded model that maps input arrays to output arrays."""

    def __init__(self, path: Path, options: SessionOptions) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = options.inter_op_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        spin = "1" if options.allow_spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        available = set(ort.get_available_providers())
        providers = [p for p in options.providers if p in available] or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # its message names the file: keep the server's paths to the log
            log.warning("ONNX Runtime cannot load %s: %s", path, exc)
            message = str(exc).replace(str(path), "the model file")
            raise InvalidModel(f"ONNX Runtime cannot load the model: {message[:300]}") from None
        self.providers: list[str] = list(self._session.get_providers())
        self.output_names: list[str] = [o.name for o in self._session.get_outputs()]
        self._input_shapes: dict[str, list[Any]] = {i.name: list(i.shape) for i in self._session.get_inputs()}

    def fixed_batch(self, input_name: str) -> int | None:
        """The batch size the graph fixes for ``input_name``, or None when the axis is dynamic."""
        shape = self._input_shapes.get(input_name) or [None]
        first = shape[0] if shape else None
        return first if isinstance(first, int) and first > 0 else None

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """Run the graph on ``feeds``; returns the requested outputs (all by default)."""
        result: list[Any] = self._session.run(outputs or self.output_names, feeds)
        return [np.asarray(r) for r in result]
