"""LanceStore, the vector store behind collections: exact and indexed search against numpy's
exact top-k, replacement by id, hostile ids, and two processes' handles on one bucket.

Recall@10 is measured on 10,000 unit vectors of dimension 1280 (MobileNetV2's pooled
features) drawn around 100 centres, with 100 queries drawn the same way; the ground truth
is numpy's exact top 10 by dot product.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from imaas.errors import CollectionNotFound, InvalidRequest
from imaas.index import lance
from imaas.index.lance import MIN_INDEX_ROWS, LanceStore
from tests.s3server import REGION

N, Q, DIM, K = 10_000, 100, 1280, 10


def clustered(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, centres.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall(store: LanceStore, table: str, xb: np.ndarray, xq: np.ndarray) -> float:
    truth = np.argsort(-(xq @ xb.T), axis=1)[:, :K]
    hits = 0
    for q, want in zip(xq, truth, strict=True):
        found = {int(n.id) for n in store.search(table, q, K)}
        hits += len(found & set(want.tolist()))
    return hits / (len(xq) * K)


def test_recall_at_10_exact_then_indexed_and_rows_added_after_the_index_are_found(tmp_path: Path) -> None:
    centres = np.random.default_rng(0).standard_normal((100, DIM))
    xb, xq = clustered(N, 1, centres), clustered(Q, 2, centres)
    store = LanceStore(str(tmp_path / "vectors"))
    store.create("t", DIM)
    for start in range(0, N, 2500):
        chunk = range(start, min(N, start + 2500))
        store.upsert("t", [str(i) for i in chunk], xb[chunk.start : chunk.stop], ["{}"] * len(chunk))
    assert store.count("t") == N
    assert store.index_state("t").index_type is None
    assert recall(store, "t", xb, xq[:20]) == 1.0  # no index: an exact scan
    state = store.build_index("t")
    assert state.index_type is not None
    assert (state.indexed_rows, state.unindexed_rows) == (N, 0)
    assert recall(store, "t", xb, xq) >= 0.95
    # a row added after the build is searched exactly and merged with the index's candidates
    late = clustered(1, 3, centres)
    store.upsert("t", [str(N)], late, ['{"late": true}'])
    assert store.index_state("t").unindexed_rows == 1
    [best] = store.search("t", late[0], 1)
    assert (best.id, best.metadata) == (str(N), '{"late": true}')
    assert best.score == pytest.approx(1.0, abs=1e-4)


def test_a_small_table_needs_no_index(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "vectors"))
    store.create("t", 4)
    store.upsert("t", ["a"], np.eye(4, dtype=np.float32)[:1], ["{}"])
    with pytest.raises(InvalidRequest, match=str(MIN_INDEX_ROWS)):
        store.build_index("t")


def test_upsert_replaces_by_id_and_delete_matches_ids_exactly(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "vectors"))
    store.create("t", 4)
    ids = ["a", "a'", "' OR ''='", "a%", "a_", "*"]
    store.upsert("t", ids, np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]], [f'{{"n":{i}}}' for i in range(6)])
    store.upsert("t", ["a"], np.eye(4, dtype=np.float32)[[3]], ['{"n":"new"}'])
    assert store.count("t") == len(ids)
    got = store.get("t", "a")
    assert got is not None
    assert got.metadata == '{"n":"new"}'
    assert np.allclose(got.vector, np.eye(4)[3])
    assert store.delete("t", ["' OR ''='", "a%", "missing"]) == 2
    assert sorted(n.id for n in store.search("t", np.ones(4, dtype=np.float32) / 2, 10)) == sorted(
        ["a", "a'", "a_", "*"]
    )
    assert store.get("t", "' OR ''='") is None
    store.drop("t")
    store.drop("t")  # gone already: no error


def test_two_handles_on_one_bucket_see_each_others_writes(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    url = f"s3://{s3_bucket}/imaas/collections"
    a = LanceStore(url, endpoint_url=s3_endpoint, region=REGION)
    b = LanceStore(url, endpoint_url=s3_endpoint, region=REGION)
    table = f"t-{uuid.uuid4().hex[:8]}"
    a.create(table, 4)
    assert b.count(table) == 0  # b opens its handle before a writes
    a.upsert(table, ["x", "y"], np.eye(4, dtype=np.float32)[:2], ["{}", "{}"])
    assert b.count(table) == 2
    assert b.search(table, np.eye(4, dtype=np.float32)[1], 1)[0].id == "y"
    b.delete(table, ["y"])
    assert [n.id for n in a.search(table, np.eye(4, dtype=np.float32)[1], 5)] == ["x"]
    b.drop(table)
    assert a._connect().list_tables().tables == []


@pytest.mark.filterwarnings("ignore:optimize\\(cleanup_older_than=0\\):UserWarning")
def test_writes_are_compacted_and_replaced_vectors_leave_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lance, "KEEP_VERSIONS_FOR", timedelta(0))
    store = LanceStore(str(tmp_path / "vectors"))
    store.create("t", 4)
    for n in range(lance.OPTIMIZE_EVERY):
        store.upsert("t", ["same"], np.eye(4, dtype=np.float32)[[n % 4]], [f'{{"n":{n}}}'])
    data = list((tmp_path / "vectors" / "t.lance" / "data").iterdir())
    # without the clean-up every write leaves a data file (one per version); with it, the
    # compacted table's file and at most the last few writes' remain
    assert len(data) <= 3, len(data)
    assert store.count("t") == 1
    got = store.get("t", "same")
    assert got is not None
    assert got.metadata == f'{{"n":{lance.OPTIMIZE_EVERY - 1}}}'


def test_a_table_dropped_by_another_process_is_collection_not_found(tmp_path: Path) -> None:
    a = LanceStore(str(tmp_path / "vectors"))
    b = LanceStore(str(tmp_path / "vectors"))
    a.create("t", 4)
    a.upsert("t", ["x"], np.eye(4, dtype=np.float32)[:1], ["{}"])
    b.drop("t")
    with pytest.raises(CollectionNotFound):
        a.count("t")  # a's cached handle
    with pytest.raises(CollectionNotFound):
        a.upsert("t", ["y"], np.eye(4, dtype=np.float32)[:1], ["{}"])
