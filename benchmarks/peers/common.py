"""Model loading and pre/post-processing shared by the peer servers (plain PIL + NumPy).

The peers serve the same ONNX file with the same pre-processing as imaas (JPEG draft
decode to >= 256, shorter side to 256, center crop 224, ImageNet mean/std), and the same
ONNX Runtime session options (1 intra-op thread, no spinning), so the comparison measures
the serving stack, not the model.
"""

from __future__ import annotations

import io
import os

import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def session() -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("PEER_INTRA_OP_THREADS", "1"))
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(os.environ["PEER_MODEL"], sess_options=so, providers=["CPUExecutionProvider"])


def preprocess(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (256, 256))
    img = img.convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def top5(logits: np.ndarray) -> list[dict[str, float]]:
    e = np.exp(logits - logits.max())
    p = e / e.sum()
    idx = np.argsort(-p)[:5]
    return [{"index": int(i), "score": float(p[i])} for i in idx]
