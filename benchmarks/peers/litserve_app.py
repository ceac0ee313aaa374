"""LitServe with dynamic batching and two workers, as its docs tune a CPU server."""

from __future__ import annotations

import base64
import os

import litserve as ls
import numpy as np
from common import preprocess, session, top5


class Classifier(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.sess = session()

    def decode_request(self, request: dict) -> np.ndarray:
        return preprocess(base64.b64decode(request["image"]))

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {"input": x})[0]

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict[str, object]:
        return {"predictions": top5(output)}


if __name__ == "__main__":
    api = Classifier(max_batch_size=8, batch_timeout=0.005)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=2, track_requests=False)
    server.run(port=int(os.environ["PEER_PORT"]), host="127.0.0.1", generate_client_file=False)
