"""The vector collection calls of the SDK, written once for ``Client`` and ``AsyncClient``.

Each ``*_call`` returns a ``Call`` (see ``calls.py``). Images are sent as base64 in JSON
(several per add); the server is the one judge of ids, metadata, vectors and ``k``.

Example::

    call = search_call("photos", image=load_image("cat.jpg"), k=5)
    call.method, call.kwargs["url"]  # ('POST', '/v1/collections/photos:search')
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imaas.client.calls import Call
from imaas.client.common import ImageSource, load_image, path_segment
from imaas.schemas.collections import AddResult, CollectionInfo, CollectionList, DeleteResult, ItemOut, SearchResult


@dataclass(frozen=True)
class Item:
    """An item to add: its id and either an image (path or bytes) or a vector, with metadata."""

    id: str
    image: ImageSource | None = None
    vector: Sequence[float] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _b64(source: ImageSource) -> str:
    return base64.b64encode(load_image(source).data).decode()


def create_collection_call(name: str, model: str, description: str = "") -> Call:
    """``POST /v1/collections``."""
    body = {"name": name, "model": model, "description": description}
    return Call("POST", {"url": "/v1/collections", "json": body}, CollectionInfo)


def list_collections_call() -> Call:
    """``GET /v1/collections``."""
    return Call("GET", {"url": "/v1/collections"}, CollectionList)


def get_collection_call(name: str) -> Call:
    """``GET /v1/collections/{name}``."""
    return Call("GET", {"url": f"/v1/collections/{path_segment(name)}"}, CollectionInfo)


def drop_collection_call(name: str) -> Call:
    """``DELETE /v1/collections/{name}``."""
    return Call("DELETE", {"url": f"/v1/collections/{path_segment(name)}"}, None)


def build_index_call(name: str) -> Call:
    """``POST /v1/collections/{name}:index``."""
    return Call("POST", {"url": f"/v1/collections/{path_segment(name)}:index", "timeout": 600.0}, CollectionInfo)


def add_call(name: str, items: Sequence[Item]) -> Call:
    """``POST /v1/collections/{name}/items`` with the items as JSON (images in base64)."""
    body = []
    for it in items:
        entry: dict[str, Any] = {"id": it.id, "metadata": dict(it.metadata)}
        if it.image is not None:
            entry["image"] = _b64(it.image)
        if it.vector is not None:
            entry["vector"] = [float(x) for x in it.vector]
        body.append(entry)
    return Call("POST", {"url": f"/v1/collections/{path_segment(name)}/items", "json": {"items": body}}, AddResult)


def search_call(
    name: str,
    *,
    image: ImageSource | None = None,
    item_id: str | None = None,
    vector: Sequence[float] | None = None,
    k: int = 10,
) -> Call:
    """``POST /v1/collections/{name}:search`` by an image, a stored id or a vector."""
    body: dict[str, Any] = {"k": k}
    if image is not None:
        body["image"] = _b64(image)
    if item_id is not None:
        body["id"] = item_id
    if vector is not None:
        body["vector"] = [float(x) for x in vector]
    return Call("POST", {"url": f"/v1/collections/{path_segment(name)}:search", "json": body}, SearchResult)


def get_item_call(name: str, item_id: str, vector: bool = False) -> Call:
    """``GET /v1/collections/{name}/items/{id}``."""
    url = f"/v1/collections/{path_segment(name)}/items/{path_segment(item_id)}"
    return Call("GET", {"url": url, "params": {"vector": "true" if vector else "false"}}, ItemOut)


def delete_items_call(name: str, ids: Sequence[str]) -> Call:
    """``POST /v1/collections/{name}/items:delete``."""
    url = f"/v1/collections/{path_segment(name)}/items:delete"
    return Call("POST", {"url": url, "json": {"ids": list(ids)}}, DeleteResult)
