"""The vector store seam: tables of unit vectors with the caller's ids and metadata.

Services talk to the ``VectorStore`` protocol; ``open_store`` picks the implementation
(``lance.LanceStore`` on a folder or on an S3-compatible bucket, chosen by the URL), so
the embedded mode and the cluster mode differ in one setting. Scores are cosine
similarities (the vectors are unit length, so a dot product): 1 is the same direction.

Example::

    store = open_store("/srv/imaas/collections")
    store.create("photos-3f2a", 1280)
    store.upsert("photos-3f2a", ["cat.jpg"], vectors, ['{"tag": "cat"}'])
    store.search("photos-3f2a", query, k=5)     # [Neighbour(id="cat.jpg", score=0.97, ...)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Neighbour:
    """One search hit: the item's id, its cosine similarity to the query, its metadata (JSON text)."""

    id: str
    score: float
    metadata: str


@dataclass(frozen=True)
class StoredItem:
    """An item as stored: id, unit vector, metadata (JSON text)."""

    id: str
    vector: np.ndarray
    metadata: str


@dataclass(frozen=True)
class IndexState:
    """A table's ANN index: its type and how many rows it covers (rows added since are
    searched exactly and merged in); ``None`` type when the table has no index."""

    index_type: str | None
    indexed_rows: int
    unindexed_rows: int


class VectorStore(Protocol):
    """Tables of ``(id, vector, metadata)`` rows, one per collection."""

    def create(self, table: str, dimension: int) -> None:
        """An empty table for vectors of ``dimension`` (a table of that name must not exist)."""
        ...

    def drop(self, table: str) -> None:
        """Remove ``table`` and its rows; nothing happens when it does not exist."""
        ...

    def upsert(self, table: str, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[str]) -> None:
        """Add rows, replacing those whose id exists already (ids are unique within a call)."""
        ...

    def delete(self, table: str, ids: Sequence[str]) -> int:
        """Remove the rows with these ids; returns how many there were."""
        ...

    def get(self, table: str, item_id: str) -> StoredItem | None:
        """The row ``item_id``, or None."""
        ...

    def search(self, table: str, vector: np.ndarray, k: int, exclude: str | None = None) -> list[Neighbour]:
        """The ``k`` rows nearest ``vector``, best first (``exclude``: an id left out)."""
        ...

    def count(self, table: str) -> int:
        """How many rows ``table`` holds."""
        ...

    def build_index(self, table: str) -> IndexState:
        """Build (or rebuild) the approximate nearest-neighbour index over every row."""
        ...

    def index_state(self, table: str) -> IndexState:
        """The table's index as it stands."""
        ...


def open_store(url: str, *, endpoint_url: str | None = None, region: str | None = None) -> VectorStore:
    """The vector store at ``url``: a folder (path or ``file://``) or ``s3://bucket/prefix``.
    LanceDB is imported here, not at package import."""
    from imaas.index.lance import LanceStore

    return LanceStore(url, endpoint_url=endpoint_url, region=region)
