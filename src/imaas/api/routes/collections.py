"""Vector collections: create over an embedding model, add images or vectors with ids and
metadata, search by image, id or vector, read and delete items, build an ANN index.

Adding and searching take JSON (images as base64) or one raw image as the body
(``Content-Type: image/jpeg``...), with ``?id=`` (and ``?metadata=``, a JSON object) for an
add and ``?k=`` for a search, so ``curl --data-binary @cat.jpg`` works as for predict.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from imaas.api.bodies import check_json_size, load_json, read_body, validated
from imaas.api.deps import COLLECTIONS_READ, COLLECTIONS_WRITE, Principal, services
from imaas.api.offload import parse_sized
from imaas.api.openapi import problem_responses, ref
from imaas.api.predict_call import body_kind
from imaas.api.routes import segments  # noqa: F401  (registers the imaas_model path convertor)
from imaas.domain import Scope
from imaas.errors import (
    CollectionExists,
    CollectionNotFound,
    DimensionMismatch,
    ImageTooLarge,
    InsufficientScope,
    InvalidField,
    InvalidImage,
    InvalidRequest,
    ItemNotFound,
    ModelForbidden,
    ModelNotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    VectorStoreUnavailable,
)
from imaas.index.store import Neighbour
from imaas.schemas.collections import (
    NAME_PATTERN,
    AddItems,
    AddResult,
    CollectionCreate,
    CollectionInfo,
    CollectionList,
    DeleteItems,
    DeleteResult,
    IndexInfo,
    ItemOut,
    NeighbourOut,
    SearchQuery,
    SearchResult,
)
from imaas.security.quotas import Decision
from imaas.services.collections import Described, NewItem
from imaas.services.collections import Query as SearchFrom
from imaas.services.container import Services

router = APIRouter(prefix="/v1/collections", tags=["collections"])
M = TypeVar("M", bound=BaseModel)
JSON_SLACK = 256  # values of a JSON item besides its vector (id, metadata, keys)

CollectionName = Annotated[
    str, Path(description="collection name", json_schema_extra={"pattern": NAME_PATTERN}, examples=["photos"])
]
ItemId = Annotated[
    str,
    Path(
        description="the item's id (an id holding `/` cannot be named in a path: search by it and delete it "
        "with the JSON routes)",
        max_length=1024,
        json_schema_extra={"pattern": r"^[^/\x00-\x1f\x7f]+$"},
    ),
]
COMMON = (InsufficientScope, CollectionNotFound, VectorStoreUnavailable)
IMAGE_ERRORS = (InvalidImage, ImageTooLarge, UnsupportedMediaType, PayloadTooLarge, ModelNotFound)


def info(d: Described) -> CollectionInfo:
    """Wire form of a collection."""
    c = d.collection
    return CollectionInfo(
        name=c.name,
        model=c.model,
        dimension=c.dimension,
        description=c.description,
        created_at=c.created_at,
        created_by=c.created_by,
        items=d.items,
        index=IndexInfo(type=d.index.index_type, indexed=d.index.indexed_rows, unindexed=d.index.unindexed_rows),
    )


def _b64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{field}: not valid base64") from None


async def _json(request: Request, svc: Services, model: type[M], values: int) -> M:
    """The JSON body validated as ``model``, refused before it is parsed when it holds more
    than about ``values`` values (vectors' numbers included) or a few dozen arrays and
    objects per item."""
    body = await read_body(request, svc.settings.server.max_body_bytes)
    check_json_size(body, max_values=values, max_containers=32 * svc.settings.collections.max_items + 16)
    doc = await parse_sized(len(body), load_json, body)
    return validated(model, doc)


def _body_doc(model: type[BaseModel], raw: str) -> dict[str, Any]:
    """A JSON body (the component ``openapi.py`` adds) or one raw image."""
    image = {"schema": {"type": "string", "format": "binary"}}
    return {
        "requestBody": {
            "required": True,
            "description": f"JSON, or {raw}",
            "content": {
                "application/json": {"schema": ref(model.__name__)},
                "image/jpeg": image,
                "image/png": image,
                "image/*": image,
            },
        }
    }


@router.post(
    "",
    response_model=CollectionInfo,
    status_code=201,
    summary="Create a collection over an embedding model",
    responses=problem_responses(
        InvalidRequest,
        InvalidField,
        InsufficientScope,
        ModelForbidden,
        ModelNotFound,
        CollectionExists,
        VectorStoreUnavailable,
    ),
)
async def create_collection(
    body: CollectionCreate, svc: Services = Depends(services), p: Principal = Depends(COLLECTIONS_WRITE)
) -> CollectionInfo:
    """A new, empty collection; the model must be an embedding model (one inference checks it
    and gives the vectors' dimension), and the collection keeps the version it names now."""
    made = await svc.collections.create(p, body.name, body.model, body.description)
    await svc.audit.record(p, "collection.create", body.name, model=made.collection.model)
    return info(made)


@router.get("", response_model=CollectionList, summary="List collections", responses=problem_responses(*COMMON))
async def list_collections(
    svc: Services = Depends(services), p: Principal = Depends(COLLECTIONS_READ)
) -> CollectionList:
    """Every collection the key sees, with its size and index."""
    return CollectionList(collections=[info(d) for d in await svc.collections.list(p)])


@router.get(
    "/{collection:imaas_model}",
    response_model=CollectionInfo,
    summary="Describe a collection",
    responses=problem_responses(*COMMON),
)
async def get_collection(
    collection: CollectionName, svc: Services = Depends(services), p: Principal = Depends(COLLECTIONS_READ)
) -> CollectionInfo:
    """The collection's model, dimension, size and index."""
    return info(await svc.collections.describe(p, collection))


@router.delete(
    "/{collection:imaas_model}", status_code=204, summary="Drop a collection", responses=problem_responses(*COMMON)
)
async def drop_collection(
    collection: CollectionName, svc: Services = Depends(services), p: Principal = Depends(COLLECTIONS_WRITE)
) -> Response:
    """Remove the collection and every item in it."""
    await svc.collections.drop(p, collection)
    await svc.audit.record(p, "collection.drop", collection)
    return Response(status_code=204)


@router.post(
    "/{collection}:index",
    response_model=CollectionInfo,
    summary="Build the approximate nearest-neighbour index",
    responses=problem_responses(InvalidRequest, *COMMON),
)
async def build_index(
    collection: CollectionName, svc: Services = Depends(services), p: Principal = Depends(COLLECTIONS_WRITE)
) -> CollectionInfo:
    """An IVF-HNSW index (8-bit scalar quantised, re-ranked on the full vectors) over every item;
    items added later are searched exactly and merged in until the next build. Below 1,000
    items exact search is fast and the index is refused (400)."""
    return info(await svc.collections.build_index(p, collection))


@router.post(
    "/{collection}/items",
    response_model=AddResult,
    summary="Add images or vectors",
    openapi_extra=_body_doc(AddItems, "one image; its id in ?id= and its metadata in ?metadata= (JSON)"),
    responses=problem_responses(InvalidRequest, InvalidField, DimensionMismatch, *IMAGE_ERRORS, *COMMON),
)
async def add_items(
    collection: CollectionName,
    request: Request,
    id: Annotated[
        str | None,
        Query(
            description="raw image body: the item's id (default: the first 16 hex digits of its sha256)",
            max_length=1024,
        ),
    ] = None,
    metadata: Annotated[str | None, Query(description="raw image body: a JSON object", max_length=4096)] = None,
    svc: Services = Depends(services),
    p: Principal = Depends(COLLECTIONS_WRITE),
) -> AddResult:
    """Embed the images with the collection's model (metered as predictions) and store the
    vectors with their ids and metadata, never the images; an id added again is replaced."""
    c = await svc.collections.check(p, collection, Scope.COLLECTIONS_WRITE)  # before reading the body
    kind = body_kind(request.headers.get("content-type", ""))
    if kind == "raw":
        try:
            meta = orjson.loads(metadata) if metadata is not None else {}
        except orjson.JSONDecodeError:
            raise InvalidField("query.metadata: not valid JSON") from None
        image = await read_body(request, svc.settings.server.max_body_bytes)
        items = [NewItem(id if id is not None else hashlib.sha256(image).hexdigest()[:16], image=image, metadata=meta)]
    elif kind == "json":
        limit = svc.settings.collections.max_items
        body = await _json(request, svc, AddItems, limit * (c.dimension + JSON_SLACK))
        items = [
            NewItem(
                it.id,
                image=None if it.image is None else _b64(it.image, f"items.{i}.image"),
                vector=it.vector,
                metadata=it.metadata,
            )
            for i, it in enumerate(body.items)
        ]
    else:
        raise UnsupportedMediaType("send application/json or one image (image/jpeg, image/png...)")
    added = await svc.collections.add(p, collection, items)
    _limits_touched(request, added.decisions)
    return AddResult(
        collection=collection,
        added=len(added.ids),
        ids=added.ids,
        model=added.model,
        version=added.version,
        items=added.items,
    )


def _limits_touched(request: Request, decisions: list[Decision]) -> None:
    """The quotas the embedded images touched, for the RateLimit headers (as predict adds them)."""
    if decisions:
        request.scope["state"].setdefault("ratelimit", []).extend(decisions)


def _neighbours(hits: list[Neighbour]) -> list[NeighbourOut]:
    return [NeighbourOut(id=h.id, score=round(h.score, 6), metadata=orjson.loads(h.metadata)) for h in hits]


@router.post(
    "/{collection}:search",
    response_model=SearchResult,
    summary="Find the nearest items to an image, a stored item or a vector",
    openapi_extra=_body_doc(SearchQuery, "one image; k in ?k="),
    responses=problem_responses(InvalidRequest, InvalidField, DimensionMismatch, ItemNotFound, *IMAGE_ERRORS, *COMMON),
)
async def search(
    collection: CollectionName,
    request: Request,
    k: Annotated[int | None, Query(ge=1, le=10_000, description="raw image body: neighbours to answer")] = None,
    svc: Services = Depends(services),
    p: Principal = Depends(COLLECTIONS_READ),
) -> SearchResult:
    """The ``k`` items (default 10) most similar by cosine similarity, best first; a search by
    a stored id leaves that item out of its own neighbours."""
    c = await svc.collections.check(p, collection, Scope.COLLECTIONS_READ)  # before reading the body
    kind = body_kind(request.headers.get("content-type", ""))
    if kind == "raw":
        query = SearchFrom(image=await read_body(request, svc.settings.server.max_body_bytes))
        wanted = k or 10
    elif kind == "json":
        body = await _json(request, svc, SearchQuery, c.dimension + JSON_SLACK)
        image = None if body.image is None else _b64(body.image, "image")
        query = SearchFrom(image=image, id=body.id, vector=body.vector)
        wanted = k or body.k
    else:
        raise UnsupportedMediaType("send application/json or one image (image/jpeg, image/png...)")
    found = await svc.collections.search(p, collection, query, wanted)
    _limits_touched(request, found.decisions)
    return SearchResult(
        collection=collection,
        k=wanted,
        model=found.model,
        version=found.version,
        neighbours=_neighbours(found.neighbours),
    )


@router.get(
    "/{collection}/items/{item_id}",
    response_model=ItemOut,
    summary="Read an item",
    responses=problem_responses(ItemNotFound, *COMMON),
)
async def get_item(
    collection: CollectionName,
    item_id: ItemId,
    vector: Annotated[bool, Query(description="include the stored unit vector")] = False,
    svc: Services = Depends(services),
    p: Principal = Depends(COLLECTIONS_READ),
) -> ItemOut:
    """The item's metadata (and vector when asked)."""
    found, meta, vec = await svc.collections.get(p, collection, item_id)
    return ItemOut(id=found, metadata=meta, vector=[float(x) for x in vec] if vector else None)


@router.delete(
    "/{collection}/items/{item_id}",
    status_code=204,
    summary="Delete an item",
    responses=problem_responses(ItemNotFound, *COMMON),
)
async def delete_item(
    collection: CollectionName,
    item_id: ItemId,
    svc: Services = Depends(services),
    p: Principal = Depends(COLLECTIONS_WRITE),
) -> Response:
    """Remove one item (404 when the collection holds no such id)."""
    deleted, _ = await svc.collections.delete(p, collection, [item_id])
    if not deleted:
        raise ItemNotFound(f"collection {collection!r} holds no item {item_id[:64]!r}")
    return Response(status_code=204)


@router.post(
    "/{collection}/items:delete",
    response_model=DeleteResult,
    summary="Delete items by id",
    responses=problem_responses(InvalidRequest, InvalidField, *COMMON),
)
async def delete_items(
    collection: CollectionName,
    body: DeleteItems,
    svc: Services = Depends(services),
    p: Principal = Depends(COLLECTIONS_WRITE),
) -> DeleteResult:
    """Remove the items with these ids (ids that are not there are ignored; ``deleted`` counts the rest)."""
    deleted, left = await svc.collections.delete(p, collection, body.ids)
    return DeleteResult(collection=collection, deleted=deleted, items=left)
