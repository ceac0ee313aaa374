"""Wire models of vector collections (``/v1/collections``), shared by the server and the SDK."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
MODEL_REF_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}(@[1-9][0-9]{0,15}|:[a-z][a-z0-9_-]{0,31})?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectionCreate(_Strict):
    """A new collection: its name and the embedding model that turns its images into vectors."""

    name: str = Field(pattern=NAME_PATTERN, description="1-63 lowercase letters, digits, '.', '_' or '-'")
    model: str = Field(
        pattern=MODEL_REF_PATTERN,
        description="an embedding model: `name`, `name@version` or `name:alias` (default alias production); "
        "images added and searched later go through the version it names then",
    )
    description: str = Field("", max_length=10_000)


class IndexInfo(BaseModel):
    """The collection's approximate nearest-neighbour index (``type`` null: exact search only)."""

    type: str | None = None
    indexed: int = Field(0, description="items the index covers")
    unindexed: int = Field(0, description="items added since, searched exactly and merged in")


class CollectionInfo(BaseModel):
    """A collection: model, dimension, size and index."""

    name: str
    model: str
    dimension: int
    description: str = ""
    created_at: datetime | None = None
    created_by: str | None = None
    items: int = Field(description="how many items it holds")
    index: IndexInfo = Field(default_factory=IndexInfo)


class CollectionList(BaseModel):
    """Every collection the key sees, by name."""

    collections: list[CollectionInfo]


class ItemIn(_Strict):
    """One item to add: its id, and either an image (base64) or a vector of the collection's dimension."""

    id: str = Field(min_length=1, description="the caller's id; adding an id again replaces its vector and metadata")
    image: str | None = Field(None, description="base64 of an encoded image (JPEG, PNG, WebP...)")
    vector: list[float] | None = Field(None, description="a vector made elsewhere (L2-normalised on the way in)")
    metadata: dict[str, Any] = Field(default_factory=dict, description="a JSON object stored with the item")


class AddItems(_Strict):
    """Items to add (or replace, by id)."""

    items: list[ItemIn] = Field(min_length=1)


class AddResult(BaseModel):
    """What an add stored: the ids, and the model version that embedded the images."""

    collection: str
    added: int
    ids: list[str]
    model: str | None = None
    version: int | None = None
    items: int = Field(description="items the collection holds now")


class SearchQuery(_Strict):
    """A search: by an image, by a stored item's id, or by a vector; ``k`` neighbours."""

    image: str | None = Field(None, description="base64 of an encoded image")
    id: str | None = Field(None, description="a stored item's id (it is left out of its own neighbours)")
    vector: list[float] | None = None
    k: int = Field(10, ge=1, description="neighbours to answer (at most collections.max_k)")


class NeighbourOut(BaseModel):
    """One neighbour: its id, cosine similarity (1 = same direction) and metadata."""

    id: str
    score: float
    metadata: dict[str, Any]


class SearchResult(BaseModel):
    """Neighbours best first; ``model``/``version`` say what embedded the query image."""

    collection: str
    k: int
    model: str | None = None
    version: int | None = None
    neighbours: list[NeighbourOut]


class ItemOut(BaseModel):
    """A stored item (its vector only when asked for)."""

    id: str
    metadata: dict[str, Any]
    vector: list[float] | None = None


class DeleteItems(_Strict):
    """Ids to remove."""

    ids: list[str] = Field(min_length=1)


class DeleteResult(BaseModel):
    """How many of the ids were there, and what the collection holds now."""

    collection: str
    deleted: int
    items: int
