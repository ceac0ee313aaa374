"""Vector collections: images turned into embeddings by a model of the registry, stored with
the caller's ids and metadata (never the images), searched by image, by stored id or by
vector for the nearest items.

A collection is a registry row (name, embedding model, dimension, vector table) plus a
table in the vector store (``imaas.index``), so in cluster mode every replica sees the same
collections and items. Images are embedded through the model's own batch queue and metered
like predictions (``UsageService.metered``: quotas charged, usage recorded per model and
version); vectors are L2-normalised on the way in, so scores are cosine similarities.

Authorisation: ``collections:read`` lists, describes, reads and searches;
``collections:write`` creates, adds, deletes, drops and indexes; embedding an image also
needs ``infer``. A key limited to some names sees only the collections whose name and model
it may use; others are ``CollectionNotFound`` as if absent.

A collection is pinned to the model version its reference named at creation (an alias is
resolved then): a promote or a canary never mixes another model's vectors into it.

Example::

    info = await collections.create(p, "photos", "mobilenet-v2-embed")
    await collections.add(p, "photos", [NewItem("cat.jpg", image=jpeg, metadata={"tag": "cat"})])
    hits = await collections.search(p, "photos", Query(image=other_jpeg), k=5)
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imaas.domain import ModelRef, Principal, Scope, check_name
from imaas.errors import (
    CollectionNotFound,
    DimensionMismatch,
    InvalidField,
    ItemNotFound,
    ModelForbidden,
)
from imaas.imaging.samples import warmup_image
from imaas.index.store import IndexState, Neighbour, VectorStore
from imaas.registry.collections import Collection, SqlCollections
from imaas.registry.fields import invalid
from imaas.runtime.tasks.embedding import normalized
from imaas.security.quotas import Decision
from imaas.services.access import authorize, check_model, model_of
from imaas.services.inference import Answer, ImageInput, InferenceService
from imaas.services.usage import UsageService
from imaas.settings import CollectionSettings

HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


@dataclass(frozen=True)
class NewItem:
    """One item to add: its id and either an encoded image or a vector, with its metadata."""

    id: str
    image: bytes | None = None
    vector: Sequence[float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Query:
    """What a search starts from: exactly one of an image, a stored id or a vector."""

    image: bytes | None = None
    id: str | None = None
    vector: Sequence[float] | None = None


@dataclass(frozen=True)
class Described:
    """A collection with its size and index."""

    collection: Collection
    items: int
    index: IndexState


@dataclass(frozen=True)
class Added:
    """What an add stored, and the model version that embedded its images (None: vectors only)."""

    ids: list[str]
    model: str | None
    version: int | None
    items: int
    decisions: list[Decision] = field(default_factory=list)  # the quotas the embedded images touched


@dataclass(frozen=True)
class Found:
    """A search's neighbours, and the model version that embedded the query image."""

    neighbours: list[Neighbour]
    model: str | None = None
    version: int | None = None
    decisions: list[Decision] = field(default_factory=list)  # the quotas the query image touched


def unit(vector: Sequence[float], dimension: int, field_name: str) -> np.ndarray:
    """``vector`` as a float32 unit vector of ``dimension`` (``normalized``, as the embedding
    task answers them); ``DimensionMismatch`` or ``InvalidField`` (non-finite numbers, a zero
    vector) naming ``field_name``."""
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.shape[0] != dimension:
        raise DimensionMismatch(
            f"{field_name}: {v.shape[0]} numbers, but the collection holds vectors of dimension {dimension}"
        )
    if not np.all(np.isfinite(v)):
        raise invalid(field_name, "must hold finite numbers only")
    if not np.any(v):
        raise invalid(field_name, "a zero vector has no direction to compare")
    return normalized(v)


def check_item_id(item_id: str, max_length: int, field_name: str) -> str:
    """``item_id``, or ``InvalidField`` naming ``field_name`` when it is empty, longer than
    ``max_length`` or holds a character that hides or reorders text (controls, formats such
    as bidi overrides and zero-width spaces, line and paragraph separators)."""
    if not isinstance(item_id, str) or not item_id:
        raise invalid(field_name, "must be non-empty text")
    if len(item_id) > max_length:
        raise invalid(field_name, f"at most {max_length} characters, got {len(item_id)}")
    if any(unicodedata.category(ch) in HIDDEN_CATEGORIES for ch in item_id):
        raise invalid(field_name, "must not contain control, format or separator characters")
    return item_id


class CollectionService:
    """The use cases of ``/v1/collections``."""

    def __init__(
        self,
        rows: SqlCollections,
        store: VectorStore,
        inference: InferenceService,
        usage: UsageService,
        limits: CollectionSettings,
    ) -> None:
        self.rows = rows
        self.store = store
        self.inference = inference
        self.usage = usage
        self.limits = limits

    # -- checks ------------------------------------------------------------------------------
    async def _visible(self, p: Principal, name: str) -> Collection:
        """The collection ``name`` if the key sees its name and its model; absent otherwise
        (a probe cannot tell a collection over another tenant's model from none)."""
        if not p.sees(name):
            raise CollectionNotFound(f"no collection named {name!r}")
        c = await asyncio.to_thread(self.rows.get, name)
        if not p.sees(model_of(c.model)):
            raise CollectionNotFound(f"no collection named {name!r}")
        return c

    async def check(self, p: Principal, name: str, scope: Scope) -> Collection:
        """The collection ``name`` for a caller holding ``scope`` (what an edge asks before it
        reads a large body); ``CollectionNotFound`` as if absent, ``InsufficientScope``."""
        authorize(p, scope)
        return await self._visible(p, name)

    def _check_id(self, item_id: str, field_name: str) -> str:
        return check_item_id(item_id, self.limits.max_id_length, field_name)

    def _metadata_text(self, metadata: Any, field_name: str) -> str:
        if not isinstance(metadata, dict):
            raise invalid(field_name, "must be a JSON object")
        try:
            text = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            raise invalid(field_name, "must be plain JSON (no NaN or infinity)") from None
        size = len(text.encode())
        if size > self.limits.max_metadata_bytes:
            raise invalid(field_name, f"at most {self.limits.max_metadata_bytes} bytes as JSON, got {size}")
        return text

    async def _embed(
        self, p: Principal, c: Collection, images: list[ImageInput]
    ) -> tuple[np.ndarray, Answer, list[Decision]]:
        """The images' unit vectors from the collection's model, metered as predictions, and
        the quotas they touched (for the RateLimit headers)."""
        authorize(p, Scope.INFER)
        check_model(p, c.model)

        async def embed() -> tuple[np.ndarray, Answer]:  # a refusal here refunds the images
            answer = await self.inference.predict(ModelRef.parse(c.model), images)
            body = answer.body
            if body["task"] != "embedding":
                raise InvalidField(
                    f"model: {body['model']}@{body['version']} is a {body['task']} model; "
                    f"collection {c.name!r} needs an embedding model"
                )
            vectors = np.asarray([r["embedding"] for r in body["results"]], dtype=np.float32)
            if vectors.shape[1] != c.dimension:
                raise DimensionMismatch(
                    f"model: {body['model']}@{body['version']} answers vectors of dimension {vectors.shape[1]}, "
                    f"but collection {c.name!r} holds dimension {c.dimension}"
                )
            return vectors, answer

        (vectors, answer), decisions = await self.usage.metered(
            p, len(images), sum(len(im.data) for im in images), embed, lambda done: done[1].served_by()
        )
        return vectors, answer, decisions

    # -- collections ---------------------------------------------------------------------------
    async def create(self, p: Principal, name: str, model: str, description: str = "") -> Described:
        """A new, empty collection over the embedding model ``model``, pinned to the version
        it names now (an alias is resolved), checked with one inference that also gives the
        dimension (so it needs ``infer`` too)."""
        authorize(p, Scope.COLLECTIONS_WRITE)
        check_name(name)
        if not p.sees(name):
            raise ModelForbidden(f"this API key may only use the names {', '.join(p.models or ())}")
        ref = ModelRef.parse(model)
        check_model(p, ref.name)
        version = (await self.inference.routes.get(ref)).primary
        if version.manifest.task != "embedding":
            raise InvalidField(
                f"model: {model!r} is a {version.manifest.task} model; a collection needs an embedding model"
            )
        authorize(p, Scope.INFER)  # the probe below runs the model
        pinned = ModelRef.parse(f"{version.model}@{version.version}")
        answer = await self.inference.predict(pinned, [ImageInput(warmup_image(), "probe.jpg")])
        dimension = int(answer.body["results"][0]["dimension"])
        table = f"{name}-{uuid.uuid4().hex[:12]}"
        await asyncio.to_thread(self.store.create, table, dimension)
        row = Collection(name, f"{version.model}@{version.version}", dimension, table, description, created_by=p.actor)
        try:
            created = await asyncio.to_thread(self.rows.create, row, self.limits.max_collections)
        except BaseException:
            await asyncio.to_thread(self.store.drop, table)
            raise
        return Described(created, 0, IndexState(None, 0, 0))

    async def list(self, p: Principal) -> list[Described]:
        """Every collection the key sees, with its size and index."""
        authorize(p, Scope.COLLECTIONS_READ)
        rows = await asyncio.to_thread(self.rows.list)
        seen = [c for c in rows if p.sees(c.name) and p.sees(model_of(c.model))]
        out = []
        for c in seen:
            try:
                out.append(await self._describe(c))
            except CollectionNotFound:  # its table is gone (a drop that failed half-way): listed empty, droppable
                out.append(Described(c, 0, IndexState(None, 0, 0)))
        return out

    async def describe(self, p: Principal, name: str) -> Described:
        """The collection ``name`` with its size and index."""
        authorize(p, Scope.COLLECTIONS_READ)
        return await self._describe(await self._visible(p, name))

    async def _describe(self, c: Collection) -> Described:
        state = await asyncio.to_thread(self.store.index_state, c.table_name)
        return Described(c, state.indexed_rows + state.unindexed_rows, state)

    async def drop(self, p: Principal, name: str) -> None:
        """Remove the collection and every item in it."""
        authorize(p, Scope.COLLECTIONS_WRITE)
        c = await self._visible(p, name)
        # the table first: a drop that fails half-way leaves a row whose items are gone (a
        # retry finishes it), never a table no row names
        await asyncio.to_thread(self.store.drop, c.table_name)
        await asyncio.to_thread(self.rows.delete, name)

    async def build_index(self, p: Principal, name: str) -> Described:
        """Build the collection's ANN index over every item (``InvalidRequest`` when it is too small to need one)."""
        authorize(p, Scope.COLLECTIONS_WRITE)
        c = await self._visible(p, name)
        state = await asyncio.to_thread(self.store.build_index, c.table_name)
        return Described(c, state.indexed_rows + state.unindexed_rows, state)

    # -- items -------------------------------------------------------------------------------
    async def add(self, p: Principal, name: str, items: Sequence[NewItem]) -> Added:
        """Store the items (an id again replaces its vector and metadata); images go through
        the collection's model in one request's batch, vectors are checked and normalised."""
        authorize(p, Scope.COLLECTIONS_WRITE)
        c = await self._visible(p, name)
        if not items:
            raise invalid("items", "at least one item")
        if len(items) > self.limits.max_items:
            raise invalid("items", f"at most {self.limits.max_items} items a request, got {len(items)}")
        ids, texts, seen = [], [], set()
        for i, item in enumerate(items):
            item_id = self._check_id(item.id, f"items.{i}.id")
            if item_id in seen:
                raise invalid(f"items.{i}.id", f"{item_id[:64]!r} appears twice in this request")
            seen.add(item_id)
            if (item.image is None) == (item.vector is None):
                raise invalid(f"items.{i}", "give either an image or a vector")
            ids.append(item_id)
            texts.append(self._metadata_text(item.metadata, f"items.{i}.metadata"))
        held = await asyncio.to_thread(self.store.count, c.table_name)
        if held + len(ids) > self.limits.max_collection_items:  # before any image is embedded (and charged)
            cap = self.limits.max_collection_items
            raise invalid("items", f"collection {name!r} holds {held:,} items; at most {cap:,} fit")
        vectors = np.zeros((len(items), c.dimension), dtype=np.float32)
        for i, item in enumerate(items):
            if item.vector is not None:
                vectors[i] = unit(item.vector, c.dimension, f"items.{i}.vector")
        with_images = [i for i, item in enumerate(items) if item.image is not None]
        model = version = None
        decisions: list[Decision] = []
        if with_images:
            images = [ImageInput(items[i].image or b"", items[i].id) for i in with_images]
            embedded, answer, decisions = await self._embed(p, c, images)
            vectors[with_images] = embedded
            model, version = answer.body["model"], answer.body["version"]
        await asyncio.to_thread(self.store.upsert, c.table_name, ids, vectors, texts)
        count = await asyncio.to_thread(self.store.count, c.table_name)
        return Added(ids, model, version, count, decisions)

    async def search(self, p: Principal, name: str, query: Query, k: int) -> Found:
        """The ``k`` items nearest the query, best first."""
        authorize(p, Scope.COLLECTIONS_READ)
        c = await self._visible(p, name)
        if not 1 <= k <= self.limits.max_k:
            raise invalid("k", f"must be between 1 and {self.limits.max_k}, got {k}")
        given = [x is not None for x in (query.image, query.id, query.vector)]
        if sum(given) != 1:
            raise invalid("query", "search by exactly one of: an image, an item id, a vector")
        if query.image is not None:
            vectors, answer, decisions = await self._embed(p, c, [ImageInput(query.image, "query")])
            hits = await asyncio.to_thread(self.store.search, c.table_name, vectors[0], k)
            return Found(hits, answer.body["model"], answer.body["version"], decisions)
        if query.id is not None:
            item_id = self._check_id(query.id, "id")
            stored = await asyncio.to_thread(self.store.get, c.table_name, item_id)
            if stored is None:
                raise ItemNotFound(f"collection {name!r} holds no item {item_id[:64]!r}")
            return Found(await asyncio.to_thread(self.store.search, c.table_name, stored.vector, k, item_id))
        assert query.vector is not None
        vector = unit(query.vector, c.dimension, "vector")
        return Found(await asyncio.to_thread(self.store.search, c.table_name, vector, k))

    async def get(self, p: Principal, name: str, item_id: str) -> tuple[str, dict[str, Any], np.ndarray]:
        """A stored item: its id, metadata and unit vector."""
        authorize(p, Scope.COLLECTIONS_READ)
        c = await self._visible(p, name)
        stored = await asyncio.to_thread(self.store.get, c.table_name, self._check_id(item_id, "id"))
        if stored is None:
            raise ItemNotFound(f"collection {name!r} holds no item {item_id[:64]!r}")
        return stored.id, json.loads(stored.metadata), stored.vector

    async def delete(self, p: Principal, name: str, ids: Sequence[str]) -> tuple[int, int]:
        """Remove the items with these ids: how many there were, and how many are left."""
        authorize(p, Scope.COLLECTIONS_WRITE)
        c = await self._visible(p, name)
        if not ids or len(ids) > self.limits.max_items:
            raise invalid("ids", f"between 1 and {self.limits.max_items} ids a request, got {len(ids)}")
        checked = [self._check_id(x, f"ids.{i}") for i, x in enumerate(ids)]
        deleted = await asyncio.to_thread(self.store.delete, c.table_name, checked)
        return deleted, await asyncio.to_thread(self.store.count, c.table_name)
