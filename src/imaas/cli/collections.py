"""``imaas collections create/list/show/add/search/get/delete/drop/index``: vector collections.

Each command parses its options, makes SDK calls against a running server (``--url``, with
``--api-key`` or a local server's admin key, see ``credentials.py``) and renders the answer;
``--json`` prints the server's JSON instead. Ids, metadata, ``k`` and vectors are judged by
the server, which names the field it refuses.

Example::

    imaas collections create photos mobilenet-v2-embed
    imaas collections add photos cat.jpg dog.jpg --metadata '{"album": "pets"}'
    imaas collections search photos kitten.jpg -k 3
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from imaas.cli.credentials import call
from imaas.cli.terminal import (
    DEFAULT_URL,
    ApiKeyOption,
    JsonOption,
    ServerHomeOption,
    UrlOption,
    add_plain_row,
    print_all,
    wide_console,
)
from imaas.cli.times import shown
from imaas.client import Item
from imaas.schemas.collections import CollectionInfo, SearchResult

collections_app = typer.Typer(
    help="Vector collections: store images' embeddings with ids and metadata and find the most similar "
    "(collections:read to read and search, collections:write to change; embedding an image also needs infer).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
NameArgument = Annotated[str, typer.Argument(help="the collection")]
MAX_ITEMS_PER_CALL = 32  # images sent per request by `add` (the server takes up to collections.max_items)
MAX_BYTES_PER_CALL = 8 * 1024 * 1024  # image bytes per request (base64 adds a third; the body limit is 20 MiB)


def _metadata(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise typer.BadParameter(f"{text[:60]!r} is not JSON", param_hint="--metadata") from None
    if not isinstance(value, dict):
        raise typer.BadParameter('a JSON object such as \'{"album": "pets"}\'', param_hint="--metadata")
    return value


def _info_lines(c: CollectionInfo) -> list[str]:
    index = c.index.type or "none (exact search)"
    return [
        f"{c.name}: {c.items:,} items of dimension {c.dimension}, embedded by {c.model}",
        f"index: {index}"
        + (f" ({c.index.indexed:,} indexed, {c.index.unindexed:,} added since)" if c.index.type else ""),
        f"created {shown(c.created_at)} by {c.created_by or '-'}" + (f"; {c.description}" if c.description else ""),
    ]


def _neighbours(found: SearchResult) -> Table:
    by = f" (query embedded by {found.model}@{found.version})" if found.model else ""
    table = Table("#", "id", "score", "metadata", title=f"nearest in {found.collection}{by}")
    for n, hit in enumerate(found.neighbours, 1):
        add_plain_row(table, str(n), hit.id, f"{hit.score:.4f}", json.dumps(hit.metadata, ensure_ascii=False))
    return table


@collections_app.command("create")
def collections_create(
    name: NameArgument,
    model: Annotated[str, typer.Argument(help="an embedding model: name, name@version or name:alias")],
    description: Annotated[str, typer.Option(help="what the collection holds")] = "",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create collection NAME over the embedding model MODEL."""
    made = call(url, api_key, home, lambda c: c.create_collection(name, model, description))
    if as_json:
        typer.echo(made.model_dump_json(indent=2))
        return
    print_all(*_info_lines(made))


@collections_app.command("list")
def collections_list(
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the collections with their model, size and index."""
    found = call(url, api_key, home, lambda c: c.list_collections())
    if as_json:
        typer.echo(json.dumps([c.model_dump(mode="json") for c in found], indent=2))
        return
    table = Table("name", "model", "dimension", "items", "index", "created")
    for c in found:
        add_plain_row(
            table, c.name, c.model, str(c.dimension), f"{c.items:,}", c.index.type or "-", shown(c.created_at)
        )
    wide_console().print(table)


@collections_app.command("show")
def collections_show(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """A collection's model, dimension, size and index."""
    info = call(url, api_key, home, lambda c: c.get_collection(name))
    if as_json:
        typer.echo(info.model_dump_json(indent=2))
        return
    print_all(*_info_lines(info))


@collections_app.command("add")
def collections_add(
    name: NameArgument,
    images: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, readable=True, help="image files")],
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="the items' ids, one per image (default: the file names)")
    ] = None,
    metadata: Annotated[str | None, typer.Option(help="a JSON object stored with every image added")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add IMAGES to collection NAME (embedded by its model; an id added again is replaced)."""
    if ids and len(ids) != len(images):
        raise typer.BadParameter(f"{len(ids)} ids for {len(images)} images", param_hint="--id")
    chosen = ids or [p.name for p in images]
    twice = sorted({i for i in chosen if chosen.count(i) > 1})
    if twice:  # a/cat.jpg and b/cat.jpg would replace each other
        raise typer.BadParameter(
            f"{', '.join(twice[:5])} named more than once: give each image an --id", param_hint="--id"
        )
    meta = _metadata(metadata)
    items = [Item(chosen[i], image=p, metadata=meta) for i, p in enumerate(images)]

    def add_all(c: Any) -> list[Any]:
        return [c.add_items(name, batch) for batch in _batches(items, [p.stat().st_size for p in images])]

    results = call(url, api_key, home, add_all)
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in results], indent=2))
        return
    last = results[-1]
    print_all(
        f"added {sum(r.added for r in results):,} to {name} (embedded by {last.model}@{last.version}); "
        f"it holds {last.items:,} items"
    )


def _batches(items: list[Item], sizes: list[int]) -> list[list[Item]]:
    """``items`` in requests of at most ``MAX_ITEMS_PER_CALL`` items and ``MAX_BYTES_PER_CALL`` image bytes."""
    batches: list[list[Item]] = []
    current: list[Item] = []
    held = 0
    for item, size in zip(items, sizes, strict=True):
        if current and (len(current) >= MAX_ITEMS_PER_CALL or held + size > MAX_BYTES_PER_CALL):
            batches.append(current)
            current, held = [], 0
        current.append(item)
        held += size
    if current:
        batches.append(current)
    return batches


@collections_app.command("search")
def collections_search(
    name: NameArgument,
    image: Annotated[
        Path | None, typer.Argument(exists=True, dir_okay=False, readable=True, help="a query image")
    ] = None,
    item_id: Annotated[str | None, typer.Option("--id", help="search by a stored item instead of an image")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="neighbours to show")] = 10,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """The K items of NAME most similar to IMAGE (or to the stored item --id), best first."""
    if (image is None) == (item_id is None):
        raise typer.BadParameter("give an IMAGE or --id, not both", param_hint="IMAGE")
    found = call(url, api_key, home, lambda c: c.search(name, image=image, item_id=item_id, k=k))
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
        return
    wide_console().print(_neighbours(found))


@collections_app.command("get")
def collections_get(
    name: NameArgument,
    item_id: Annotated[str, typer.Argument(help="the item's id")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
) -> None:
    """An item's metadata and vector, as JSON."""
    item = call(url, api_key, home, lambda c: c.get_item(name, item_id, vector=True))
    typer.echo(item.model_dump_json(indent=2))


@collections_app.command("delete")
def collections_delete(
    name: NameArgument,
    ids: Annotated[list[str], typer.Argument(help="ids of the items to remove")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
) -> None:
    """Remove items from NAME by id."""
    done = call(url, api_key, home, lambda c: c.delete_items(name, ids))
    print_all(f"deleted {done.deleted:,} of {len(ids):,}; {name} holds {done.items:,} items")


@collections_app.command("drop")
def collections_drop(
    name: NameArgument,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
) -> None:
    """Drop collection NAME and every item in it."""
    if not yes:
        typer.confirm(f"drop {name} and every item in it?", abort=True)
    call(url, api_key, home, lambda c: c.drop_collection(name))
    print_all(f"dropped {name}")


@collections_app.command("index")
def collections_index(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
) -> None:
    """Build NAME's approximate nearest-neighbour index (for 1,000 items or more)."""
    info = call(url, api_key, home, lambda c: c.build_index(name))
    print_all(*_info_lines(info))


def register(app: typer.Typer) -> None:
    """Add ``collections`` to the ``imaas`` command."""
    app.add_typer(collections_app, name="collections")
