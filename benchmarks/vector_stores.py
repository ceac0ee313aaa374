"""Vector stores for image embeddings: LanceDB vs usearch vs faiss-cpu (research benchmark).

Run it in a venv of its own (it is not part of imaas' dependencies):

    python3 -m venv /tmp/vec-venv
    /tmp/vec-venv/bin/pip install lancedb usearch faiss-cpu numpy 'moto[server]' boto3 psutil
    /tmp/vec-venv/bin/python benchmarks/vector_stores.py --json /tmp/vectors.json

What it measures, on N (10,000) L2-normalised float32 vectors of dim 1280 (MobileNetV2's
pooled features) and Q (200) queries, for two distributions (`random`: isotropic gaussian,
the worst case for ANN; `clustered`: 100 gaussian clusters), ground truth = exact top-10 by
dot product in numpy:

- per store/configuration (each store runs in a fresh subprocess, so import time and RSS are
  its own): insert time, index build time, recall@10, p50/p95 latency of one query, QPS of
  sequential single queries (and of one batched call where the library has one), size on disk;
- LanceDB without an index (flat scan), IVF_PQ (with and without refine_factor) and IVF_HNSW_SQ;
- LanceDB on S3 (moto's server mode on 127.0.0.1): two processes with their own
  `lancedb.connect` handles see each other's adds and deletes (stale handle, `checkout_latest()`,
  `read_consistency_interval`), concurrent appends, a concurrent create of the same table,
  and add/search latency against moto.

Everything stays on this machine; moto is started and stopped by the script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

K = 10


# --------------------------------------------------------------------------- data


def make_data(kind: str, n: int, q: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)

    def norm(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    if kind == "random":
        return norm(rng.standard_normal((n, dim))), norm(rng.standard_normal((q, dim)))
    if kind == "clustered":
        centers = norm(rng.standard_normal((100, dim)))
        # noise norm ~0.8 of the (unit) centre: clusters overlap in score but are distinct
        sigma = 0.8 / np.sqrt(dim)
        lab = rng.integers(0, 100, n)
        xb = norm(centers[lab] + sigma * rng.standard_normal((n, dim)))
        lq = rng.integers(0, 100, q)
        xq = norm(centers[lq] + sigma * rng.standard_normal((q, dim)))
        return xb, xq
    raise ValueError(kind)


def exact_topk(xb: np.ndarray, xq: np.ndarray, k: int = K) -> np.ndarray:
    s = xq @ xb.T
    idx = np.argpartition(-s, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, idx, axis=1), axis=1)
    return np.take_along_axis(idx, order, axis=1)


def recall(found: list[list[int]] | np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(map(int, f[:K])) & set(map(int, t))) for f, t in zip(found, truth, strict=True))
    return hits / (len(truth) * K)


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def dir_mb(p: str | Path) -> float:
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file()) / 2**20


def timed_queries(fn, xq: np.ndarray, warm: int = 5) -> tuple[list[list[int]], dict[str, float]]:
    for v in xq[:warm]:
        fn(v)
    out, lat = [], []
    t_all = time.perf_counter()
    for v in xq:
        t = time.perf_counter()
        out.append(fn(v))
        lat.append((time.perf_counter() - t) * 1000)
    total = time.perf_counter() - t_all
    lat.sort()
    return out, {
        "p50_ms": round(statistics.median(lat), 3),
        "p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 3),
        "qps_seq": round(len(xq) / total, 1),
    }


# --------------------------------------------------------------------------- stores (run in a subprocess each)


def run_numpy(xb, xq, truth, tmp):
    rows = []
    found, st = timed_queries(lambda v: np.argsort(-(xb @ v))[:K].tolist(), xq)
    t = time.perf_counter()
    exact_topk(xb, xq)
    st["qps_batch"] = round(len(xq) / (time.perf_counter() - t), 1)
    rows.append(
        {"config": "exact (xb @ q, argsort)", "insert_s": 0.0, "index_s": 0.0, "recall": recall(found, truth), **st}
    )
    return rows


def run_faiss(xb, xq, truth, tmp):
    import faiss

    d = xb.shape[1]
    rows = []

    def bench(name, index, insert_s, index_s, extra=None):
        found, st = timed_queries(lambda v: index.search(v[None, :], K)[1][0].tolist(), xq)
        t = time.perf_counter()
        index.search(xq, K)
        st["qps_batch"] = round(len(xq) / (time.perf_counter() - t), 1)
        path = os.path.join(tmp, name.split()[0] + ".faiss")
        t = time.perf_counter()
        faiss.write_index(index, path)
        save_s = time.perf_counter() - t
        t = time.perf_counter()
        faiss.read_index(path)
        load_s = time.perf_counter() - t
        rows.append(
            {
                "config": name,
                "insert_s": round(insert_s, 3),
                "index_s": round(index_s, 3),
                "recall": recall(found, truth),
                **st,
                "disk_mb": round(os.path.getsize(path) / 2**20, 1),
                "save_s": round(save_s, 3),
                "load_s": round(load_s, 3),
                **(extra or {}),
            }
        )

    ids = np.arange(len(xb), dtype=np.int64)
    t = time.perf_counter()
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    flat.add_with_ids(xb, ids)
    bench("IndexFlatIP (exact)", flat, time.perf_counter() - t, 0.0)

    for ef_s in (64, 128):
        t = time.perf_counter()
        h = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        h.hnsw.efConstruction = 200
        h.add(xb)
        build = time.perf_counter() - t
        h.hnsw.efSearch = ef_s
        bench(f"IndexHNSWFlat M=32 efC=200 efSearch={ef_s}", h, build, 0.0)
        if ef_s == 64:
            # single-vector adds after the build (the API's add path)
            extra = xb[:200] + 0.0
            t = time.perf_counter()
            for v in extra:
                h.add(v[None, :])
            rows[-1]["single_add_per_s"] = round(200 / (time.perf_counter() - t), 1)
            h = None

    nlist = 100
    t = time.perf_counter()
    quant = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(xb)
    train = time.perf_counter() - t
    t = time.perf_counter()
    ivf.add(xb)
    add = time.perf_counter() - t
    for nprobe in (10, 20):
        ivf.nprobe = nprobe
        bench(f"IndexIVFFlat nlist={nlist} nprobe={nprobe}", ivf, add, train)
    return rows


def run_usearch(xb, xq, truth, tmp):
    from usearch.index import Index

    d = xb.shape[1]
    rows = []
    keys = np.arange(len(xb), dtype=np.uint64)
    for dtype in ("f32", "f16", "i8"):
        for exp_s in (64, 128):
            t = time.perf_counter()
            idx = Index(ndim=d, metric="cos", dtype=dtype, connectivity=16, expansion_add=128, expansion_search=exp_s)
            idx.add(keys, xb)
            build = time.perf_counter() - t
            found, st = timed_queries(lambda v, idx=idx: idx.search(v, K).keys.tolist(), xq)
            t = time.perf_counter()
            idx.search(xq, K)
            st["qps_batch"] = round(len(xq) / (time.perf_counter() - t), 1)
            path = os.path.join(tmp, f"u-{dtype}.usearch")
            t = time.perf_counter()
            idx.save(path)
            save_s = time.perf_counter() - t
            t = time.perf_counter()
            Index.restore(path)
            load_s = time.perf_counter() - t
            row = {
                "config": f"HNSW {dtype} M=16 efC=128 ef={exp_s}",
                "insert_s": round(build, 3),
                "index_s": 0.0,
                "recall": recall(found, truth),
                **st,
                "disk_mb": round(os.path.getsize(path) / 2**20, 1),
                "save_s": round(save_s, 3),
                "load_s": round(load_s, 3),
            }
            if dtype == "f32" and exp_s == 64:
                t = time.perf_counter()
                for i, v in enumerate(xb[:200]):
                    idx.add(10**6 + i, v)
                row["single_add_per_s"] = round(200 / (time.perf_counter() - t), 1)
                t = time.perf_counter()
                for i in range(200):
                    idx.remove(10**6 + i)
                row["single_remove_per_s"] = round(200 / (time.perf_counter() - t), 1)
            rows.append(row)
    return rows


def lance_schema(dim: int):
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("meta", pa.string()),
        ]
    )


def lance_batch(xb: np.ndarray, start: int = 0, prefix: str = "id-"):
    import pyarrow as pa

    n, dim = xb.shape
    return pa.table(
        {
            "id": pa.array([f"{prefix}{start + i}" for i in range(n)], pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(xb.ravel(), pa.float32()), dim),
            "meta": pa.array([json.dumps({"n": start + i, "tag": "x"}) for i in range(n)], pa.string()),
        },
        schema=lance_schema(dim),
    )


def lance_ids(tbl) -> list[int]:
    return [int(s.rsplit("-", 1)[1]) for s in tbl.column("id").to_pylist()]


def run_lancedb(xb, xq, truth, tmp):
    import lancedb

    rows = []
    db = lancedb.connect(os.path.join(tmp, "lance"))
    dim = xb.shape[1]
    t = time.perf_counter()
    tbl = db.create_table("emb", schema=lance_schema(dim))
    create_s = time.perf_counter() - t
    data = lance_batch(xb)
    t = time.perf_counter()
    tbl.add(data)
    insert_s = time.perf_counter() - t

    def q(extra):
        def fn(v):
            b = tbl.search(v).distance_type("cosine").limit(K).select(["id", "_distance"])
            b = extra(b) if extra else b
            return lance_ids(b.to_arrow())

        return fn

    def bench(name, extra, index_s, **more):
        found, st = timed_queries(q(extra), xq)
        rows.append(
            {
                "config": name,
                "insert_s": round(insert_s, 3),
                "index_s": round(index_s, 3),
                "recall": recall(found, truth),
                **st,
                "disk_mb": round(dir_mb(os.path.join(tmp, "lance")), 1),
                **more,
            }
        )

    bench("flat (no index)", None, 0.0, create_table_s=round(create_s, 3))

    # small adds (what an API call does): one commit (new version + fragment) each
    small = lancedb.connect(os.path.join(tmp, "lance-small")).create_table("emb", schema=lance_schema(dim))
    t = time.perf_counter()
    for i in range(100):
        small.add(lance_batch(xb[i : i + 1], i))
    add1 = 100 / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(20):
        small.delete(f"id = 'id-{i}'")
    del1 = 20 / (time.perf_counter() - t)
    rows[-1]["single_add_per_s"] = round(add1, 1)
    rows[-1]["single_delete_per_s"] = round(del1, 1)
    rows[-1]["versions_after_120_commits"] = small.version

    from lancedb.index import HnswSq, IvfFlat, IvfPq

    def build(t, cfg):
        t0 = time.perf_counter()
        # with config=, the column is the first positional argument (it takes the place of `metric`);
        # vector_column_name="vector" alone is ignored and the column "l2" is looked for
        t.create_index("vector", config=cfg, replace=True)
        return time.perf_counter() - t0

    # IVF_FLAT (exact inside the probed partitions), then IVF_PQ with 16 and 8 dims per sub-vector (8 bits)
    nparts = 64
    s = build(tbl, IvfFlat(distance_type="cosine", num_partitions=nparts))
    for nprobes in (8, 16):
        bench(f"IVF_FLAT parts={nparts} nprobes={nprobes}", lambda b, n=nprobes: b.nprobes(n), s)
    for nsub in (80, 160):
        s = build(tbl, IvfPq(distance_type="cosine", num_partitions=nparts, num_sub_vectors=nsub, num_bits=8))
        for nprobes in (8, 16, 64):
            for rf in (None, 10, 50):

                def ex(b, nprobes=nprobes, rf=rf):
                    b = b.nprobes(nprobes)
                    return b.refine_factor(rf) if rf else b

                bench(f"IVF_PQ parts={nparts} subvec={nsub} nprobes={nprobes} refine={rf}", ex, s)

    # rows added after the index are not in it: searched flat (exactly) unless fast_search()
    tbl.add(lance_batch(xb[:100] * 1.0, 10**6))
    rows[-1]["unindexed_rows_after_add"] = tbl.index_stats(tbl.list_indices()[0].name).num_unindexed_rows

    # IVF_HNSW_SQ on a fresh table with the same rows; ef must be >= limit * refine_factor
    t2 = db.create_table("emb_hnsw", data=data)
    tbl = t2
    for nparts_h in (1, 4):
        try:
            s = build(t2, HnswSq(distance_type="cosine", num_partitions=nparts_h, m=20, ef_construction=300))
        except Exception as e:
            rows.append({"config": f"IVF_HNSW_SQ parts={nparts_h}", "error": repr(e)[:300]})
            continue
        for nprobes, ef, rf in dict.fromkeys(
            ((1, 64, None), (nparts_h, 64, None), (nparts_h, 128, None), (nparts_h, 128, 10))
        ):

            def ex(b, nprobes=nprobes, ef=ef, rf=rf):
                b = b.nprobes(nprobes).ef(max(ef, K * (rf or 1)))
                return b.refine_factor(rf) if rf else b

            bench(
                f"IVF_HNSW_SQ parts={nparts_h} m=20 efC=300 nprobes={nprobes} ef={max(ef, K * (rf or 1))} refine={rf}",
                ex,
                s,
            )
    return rows


STORES = {"numpy": run_numpy, "faiss": run_faiss, "usearch": run_usearch, "lancedb": run_lancedb}
IMPORTS = {"numpy": "numpy", "faiss": "faiss", "usearch": "usearch.index", "lancedb": "lancedb"}


def store_worker(store: str, datadir: str, kind: str) -> None:
    """Runs in a fresh interpreter: import cost, RSS, then the store's configurations."""
    base_rss = rss_mb()
    t = time.perf_counter()
    __import__(IMPORTS[store])
    import_s = time.perf_counter() - t
    import_rss = rss_mb() - base_rss
    xb = np.load(os.path.join(datadir, f"{kind}-xb.npy"))
    xq = np.load(os.path.join(datadir, f"{kind}-xq.npy"))
    truth = np.load(os.path.join(datadir, f"{kind}-gt.npy"))
    before = rss_mb()
    tmp = tempfile.mkdtemp(prefix=f"vec-{store}-")
    try:
        rows = STORES[store](xb, xq, truth, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {
                "store": store,
                "kind": kind,
                "import_s": round(import_s, 3),
                "import_rss_mb": round(import_rss, 1),
                "rss_growth_mb": round(rss_mb() - before, 1),
                "rows": rows,
            }
        )
    )


# --------------------------------------------------------------------------- S3 (moto)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def storage_options(url: str) -> dict[str, str]:
    return {
        "endpoint": url,
        "allow_http": "true",
        "region": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }


def s3_conn(url: str, **kw):
    import lancedb

    return lancedb.connect("s3://vectors/imaas", storage_options=storage_options(url), **kw)


def _writer(url, xb_path, ev, out):
    """Process A: adds, then (later) concurrent appends."""
    try:
        xb = np.load(xb_path)
        db = s3_conn(url)
        tbl = db.open_table("emb")
        ev["b_opened"].wait(60)
        tbl.add(lance_batch(xb[1000:1010], 1000))  # 10 new rows
        db.create_table("made_by_a", schema=lance_schema(xb.shape[1]))
        ev["a_added"].set()
        ev["b_deleted"].wait(60)
        r = {"a_count_stale_handle_after_b_delete": tbl.count_rows()}
        tbl.checkout_latest()
        r["a_count_after_checkout_latest"] = tbl.count_rows()
        out.put(("A1", r))
        # concurrent appends: 20 commits of 5 rows each, racing B
        ev["go"].wait(60)
        errs, t = [], time.perf_counter()
        for i in range(20):
            try:
                tbl.add(lance_batch(make_data("random", 5, 1, xb.shape[1], seed=100 + i)[0], 5 * i, prefix="a-"))
            except Exception as e:
                errs.append(repr(e)[:300])
        out.put(("A2", {"a_errors": errs, "a_append_s": round(time.perf_counter() - t, 2)}))
        # concurrent create of the same table name
        ev["go2"].wait(60)
        try:
            db.create_table("race", schema=lance_schema(xb.shape[1]))
            out.put(("A3", "created"))
        except Exception as e:
            out.put(("A3", repr(e)[:300]))
    except Exception:
        out.put(("A_crash", traceback.format_exc()))


def _reader(url, xb_path, ev, out):
    """Process B: its own handles; sees A's adds? deletes one id; concurrent appends."""
    try:
        xb = np.load(xb_path)
        db = s3_conn(url)  # read_consistency_interval=None (default)
        tbl = db.open_table("emb")
        strong = s3_conn(url, read_consistency_interval=timedelta(0)).open_table("emb")
        eventual = s3_conn(url, read_consistency_interval=timedelta(seconds=2)).open_table("emb")
        r = {"b_count_initial": tbl.count_rows()}
        ev["b_opened"].set()
        ev["a_added"].wait(60)
        probe = xb[1005]
        hit = tbl.search(probe).distance_type("cosine").limit(1).select(["id", "_distance"]).to_arrow()
        r["b_default_handle_count"] = tbl.count_rows()
        r["b_default_handle_top1_for_new_vector"] = hit.column("id")[0].as_py()
        r["b_strong_handle_count"] = strong.count_rows()
        hit = strong.search(probe).distance_type("cosine").limit(1).select(["id", "_distance"]).to_arrow()
        r["b_strong_handle_top1_for_new_vector"] = hit.column("id")[0].as_py()
        r["b_eventual_2s_handle_count_immediately"] = eventual.count_rows()
        time.sleep(2.2)
        r["b_eventual_2s_handle_count_after_2.2s"] = eventual.count_rows()
        r["b_reopen_table_count"] = db.open_table("emb").count_rows()
        r["b_list_tables_sees_a_new_table"] = "made_by_a" in db.list_tables().tables
        t = time.perf_counter()
        tbl.checkout_latest()
        r["b_checkout_latest_ms"] = round((time.perf_counter() - t) * 1000, 1)
        r["b_default_handle_count_after_checkout_latest"] = tbl.count_rows()
        tbl.delete("id = 'id-1005'")
        r["b_count_after_delete"] = tbl.count_rows()
        ev["b_deleted"].set()
        out.put(("B1", r))
        ev["go"].wait(60)
        errs, t = [], time.perf_counter()
        for i in range(20):
            try:
                tbl.add(lance_batch(make_data("random", 5, 1, xb.shape[1], seed=200 + i)[0], 5 * i, prefix="b-"))
            except Exception as e:
                errs.append(repr(e)[:300])
        out.put(("B2", {"b_errors": errs, "b_append_s": round(time.perf_counter() - t, 2)}))
        ev["go2"].wait(60)
        try:
            db.create_table("race", schema=lance_schema(xb.shape[1]))
            out.put(("B3", "created"))
        except Exception as e:
            out.put(("B3", repr(e)[:300]))
    except Exception:
        out.put(("B_crash", traceback.format_exc()))


def run_s3(datadir: str) -> dict[str, Any]:
    import boto3

    res: dict[str, Any] = {}
    xb_path = os.path.join(datadir, "random-xb.npy")
    xb = np.load(xb_path)
    xq = np.load(os.path.join(datadir, "random-xq.npy"))
    truth = np.load(os.path.join(datadir, "random-gt.npy"))
    with moto_server() as url:
        s3 = boto3.client(
            "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
        )
        s3.create_bucket(Bucket="vectors")
        # does this moto honour conditional writes (If-None-Match: *)? Lance's commit relies on them.
        s3.put_object(Bucket="vectors", Key="probe", Body=b"1", IfNoneMatch="*")
        try:
            s3.put_object(Bucket="vectors", Key="probe", Body=b"2", IfNoneMatch="*")
            res["moto_if_none_match"] = "ignored (second put succeeded)"
        except Exception as e:
            res["moto_if_none_match"] = f"honoured: {type(e).__name__} {str(e)[:80]}"
        s3.delete_object(Bucket="vectors", Key="probe")

        db = s3_conn(url)
        t = time.perf_counter()
        tbl = db.create_table("emb", data=lance_batch(xb[:1000]))
        res["create_table_1000_rows_s"] = round(time.perf_counter() - t, 3)

        ctx = mp.get_context("spawn")
        ev = {k: ctx.Event() for k in ("b_opened", "a_added", "b_deleted", "go", "go2")}
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_writer, args=(url, xb_path, ev, out)),
            ctx.Process(target=_reader, args=(url, xb_path, ev, out)),
        ]
        for p in procs:
            p.start()
        got: dict[str, Any] = {}
        deadline = time.monotonic() + 240
        while len([k for k in got if k[1] in "12"]) < 4 and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                k, v = out.get(timeout=1)
                got[k] = v
                if k.endswith("crash"):
                    break
            if len(got) == 4 and not ev["go"].is_set():
                ev["go"].set()
        ev["go"].set()
        while len([k for k in got if k in ("A2", "B2")]) < 2 and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                k, v = out.get(timeout=1)
                got[k] = v
        ev["go2"].set()
        while len([k for k in got if k in ("A3", "B3")]) < 2 and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                k, v = out.get(timeout=1)
                got[k] = v
        for p in procs:
            p.join(30)
        res["two_processes"] = got
        tbl.checkout_latest()
        errs = len(got.get("A2", {}).get("a_errors", [])) + len(got.get("B2", {}).get("b_errors", []))
        res["after_concurrent_appends"] = {
            "expected_rows": 1000 + 10 - 1 + 200 - 5 * errs,
            "count_rows": tbl.count_rows(),
            "a_rows": tbl.count_rows("id LIKE 'a-%'"),
            "b_rows": tbl.count_rows("id LIKE 'b-%'"),
            "version": tbl.version,
        }
        with contextlib.suppress(Exception):
            res["race_table_rows_and_names"] = {
                "names": db.list_tables().tables,
                "race_rows": db.open_table("race").count_rows(),
            }

        # latency on moto: a 10k-row table
        t = time.perf_counter()
        big = db.create_table("big", data=lance_batch(xb))
        res["moto_insert_10k_s"] = round(time.perf_counter() - t, 2)
        lat = []
        for i in range(20):
            t = time.perf_counter()
            big.add(lance_batch(xb[i : i + 1], 10**6 + i))
            lat.append((time.perf_counter() - t) * 1000)
        res["moto_add_1row_p50_ms"] = round(statistics.median(lat), 1)
        lat = []
        for i in range(10):
            t = time.perf_counter()
            big.delete(f"id = 'id-{10**6 + i}'")
            lat.append((time.perf_counter() - t) * 1000)
        res["moto_delete_1row_p50_ms"] = round(statistics.median(lat), 1)

        def fn(v):
            return lance_ids(big.search(v).distance_type("cosine").limit(K).select(["id", "_distance"]).to_arrow())

        found, st = timed_queries(fn, xq[:50])
        res["moto_flat_search"] = {"recall": recall(found, truth[:50]), **st}
        t = time.perf_counter()
        big.optimize()  # compact the 20 one-row fragments
        res["moto_optimize_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        from lancedb.index import IvfPq

        big.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=64, num_sub_vectors=160))
        res["moto_ivfpq_build_s"] = round(time.perf_counter() - t, 2)

        for rf in (None, 10):

            def fn2(v, rf=rf):
                b = big.search(v).distance_type("cosine").limit(K).nprobes(16).select(["id", "_distance"])
                return lance_ids((b.refine_factor(rf) if rf else b).to_arrow())

            found, st = timed_queries(fn2, xq[:50])
            res[f"moto_ivfpq_subvec160_nprobes16_refine{rf}_search"] = {"recall": recall(found, truth[:50]), **st}
        reader = s3_conn(url).open_table("big")
        t = time.perf_counter()
        reader.search(xq[0]).distance_type("cosine").limit(K).to_arrow()
        res["moto_first_search_fresh_handle_ms"] = round((time.perf_counter() - t) * 1000, 1)
        keys = s3.list_objects_v2(Bucket="vectors", Prefix="imaas/big.lance/").get("KeyCount")
        res["moto_objects_in_big_table"] = keys
    return res


# --------------------------------------------------------------------------- main


def dist_info() -> dict[str, Any]:
    from importlib import metadata

    out = {}
    for name in (
        "lancedb",
        "pylance",
        "pyarrow",
        "lance-namespace",
        "usearch",
        "numkong",
        "faiss-cpu",
        "numpy",
        "moto",
    ):
        try:
            d = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            out[name] = None
            continue
        size = sum((f.locate().stat().st_size for f in d.files or [] if f.locate().exists()), 0)
        out[name] = {"version": d.version, "installed_mb": round(size / 2**20, 1), "requires": d.requires or []}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--stores", default="numpy,faiss,usearch,lancedb")
    ap.add_argument("--kinds", default="random,clustered")
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--_worker", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._worker:
        store_worker(*a._worker)
        return

    datadir = tempfile.mkdtemp(prefix="vec-data-")
    report: dict[str, Any] = {
        "n": a.n,
        "dim": a.dim,
        "queries": a.queries,
        "cpus": os.cpu_count(),
        "dists": dist_info(),
        "runs": [],
    }
    try:
        for kind in a.kinds.split(","):
            xb, xq = make_data(kind, a.n, a.queries, a.dim)
            np.save(os.path.join(datadir, f"{kind}-xb.npy"), xb)
            np.save(os.path.join(datadir, f"{kind}-xq.npy"), xq)
            np.save(os.path.join(datadir, f"{kind}-gt.npy"), exact_topk(xb, xq))
        for kind in a.kinds.split(","):
            for store in a.stores.split(","):
                p = subprocess.run(
                    [sys.executable, __file__, "--_worker", store, datadir, kind],
                    capture_output=True,
                    text=True,
                    timeout=1800,
                )
                if p.returncode:
                    print(f"{store}/{kind} failed:\n{p.stderr[-3000:]}", file=sys.stderr)
                    continue
                run = json.loads(p.stdout.strip().splitlines()[-1])
                report["runs"].append(run)
                print(
                    f"\n== {store} [{kind}] import {run['import_s']}s +{run['import_rss_mb']} MB RSS, "
                    f"run RSS growth {run['rss_growth_mb']} MB"
                )
                for r in run["rows"]:
                    if "error" in r:
                        print(f"  {r['config']}: ERROR {r['error']}")
                        continue
                    print(
                        f"  {r['config']:<62} recall@10={r['recall']:.3f} p50={r['p50_ms']:.2f}ms "
                        f"qps={r['qps_seq']:.0f} insert={r['insert_s']:.2f}s index={r['index_s']:.2f}s"
                    )
        if not a.no_s3 and "random" in a.kinds.split(","):
            report["s3"] = run_s3(datadir)
            print("\n== LanceDB on S3 (moto)\n" + json.dumps(report["s3"], indent=1))
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
        if a.json:
            Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
