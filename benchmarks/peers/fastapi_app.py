"""Plain FastAPI, as its docs recommend: blocking work in the thread pool, one worker per core."""

from __future__ import annotations

from common import preprocess, session, top5
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool

app = FastAPI()
sess = session()


def infer(data: bytes) -> dict[str, object]:
    x = preprocess(data)[None]
    logits = sess.run(None, {"input": x})[0][0]
    return {"predictions": top5(logits)}


@app.post("/predict")
async def predict(request: Request) -> dict[str, object]:
    return await run_in_threadpool(infer, await request.body())
