"""Vector collections over HTTP with a real server, a real embedding model and LanceDB.

The embedding model is ``tiny_classifier`` pushed as an ``embedding`` model: its vector is
the image's mean RGB (0..1) times ``tiny_weights`` (3 x 8), L2-normalised. The expected
vectors, scores and neighbour order are computed here from those weights with numpy,
independently of the server's code path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from imaas.settings import AuthSettings, MeteringSettings, Settings
from tests.conftest import RunningServer
from tests.factories import solid, tiny_classifier, tiny_weights

DIM = 8
EMBED_MANIFEST = json.dumps({"task": "embedding", "preprocess": {"resize": "exact"}})
CLASSIFY_MANIFEST = json.dumps({"preprocess": {"resize": "exact"}})
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 20, 20),
    "green": (20, 230, 20),
    "blue": (20, 20, 230),
    "orange": (240, 140, 10),
    "grey": (128, 128, 128),
}


def expected(colour: tuple[int, int, int]) -> np.ndarray:
    v = (np.array(colour, dtype=np.float64) / 255.0) @ tiny_weights(DIM).astype(np.float64)
    return v / np.linalg.norm(v)


def push(server: RunningServer, name: str, path: Path, manifest: str) -> None:
    r = httpx.post(
        f"{server.url}/v1/models/{name}/versions",
        files={"model": ("m.onnx", path.read_bytes())},
        data={"manifest": manifest},
        headers=server.headers,
        timeout=60,
    )
    assert r.status_code == 201, r.text


@pytest.fixture
def server(tmp_path: Path, serve: Callable[..., RunningServer]) -> RunningServer:
    s = serve(Settings(home=tmp_path / "home"))
    push(s, "embed", tiny_classifier(tmp_path / "embed.onnx", classes=DIM), EMBED_MANIFEST)
    push(s, "classify", tiny_classifier(tmp_path / "classify.onnx"), CLASSIFY_MANIFEST)
    return s


def call(server: RunningServer, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else dict(server.headers)
    headers.update(kw.pop("headers", {}))
    return httpx.request(method, f"{server.url}/v1/collections{path}", headers=headers, timeout=30, **kw)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def create(server: RunningServer, name: str = "colours", model: str = "embed") -> httpx.Response:
    return call(server, "POST", "", json={"name": name, "model": model, "description": "solid colours"})


def fill(server: RunningServer, name: str = "colours") -> None:
    items = [{"id": k, "image": b64(solid(c)), "metadata": {"colour": k}} for k, c in COLOURS.items()]
    r = call(server, "POST", f"/{name}/items", json={"items": items})
    assert r.status_code == 200, r.text


def test_images_added_are_found_nearest_first_with_cosine_scores(server: RunningServer) -> None:
    r = create(server)
    assert r.status_code == 201, r.text
    assert r.json()["dimension"] == DIM
    assert r.json()["items"] == 0
    fill(server)
    query = (220, 40, 30)  # a red that is in no collection
    r = call(
        server, "POST", "/colours:search", content=solid(query), params={"k": 3}, headers={"content-type": "image/png"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"]) == ("embed", 1)
    want = sorted(COLOURS, key=lambda k: -float(expected(COLOURS[k]) @ expected(query)))[:3]
    assert [n["id"] for n in body["neighbours"]] == want
    assert body["neighbours"][0]["metadata"] == {"colour": want[0]}
    for n in body["neighbours"]:
        assert n["score"] == pytest.approx(float(expected(COLOURS[n["id"]]) @ expected(query)), abs=1e-4)


def test_search_by_stored_id_leaves_the_item_out_and_by_vector_matches_by_image(server: RunningServer) -> None:
    create(server)
    fill(server)
    r = call(server, "POST", "/colours:search", json={"id": "orange", "k": 10})
    assert r.status_code == 200, r.text
    ids = [n["id"] for n in r.json()["neighbours"]]
    assert "orange" not in ids
    assert len(ids) == len(COLOURS) - 1
    want = sorted(
        (k for k in COLOURS if k != "orange"), key=lambda k: -float(expected(COLOURS[k]) @ expected(COLOURS["orange"]))
    )
    assert ids == want
    stored = call(server, "GET", "/colours/items/blue", params={"vector": "true"}).json()
    assert stored["metadata"] == {"colour": "blue"}
    assert np.allclose(stored["vector"], expected(COLOURS["blue"]), atol=1e-5)
    r = call(server, "POST", "/colours:search", json={"vector": [3 * x for x in stored["vector"]], "k": 1})
    assert r.json()["neighbours"][0]["id"] == "blue"
    assert r.json()["neighbours"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_add_replaces_by_id_takes_vectors_and_raw_images_and_deletes(server: RunningServer) -> None:
    create(server)
    fill(server)
    # the same id again: replaced, not duplicated
    r = call(server, "POST", "/colours/items", json={"items": [{"id": "red", "image": b64(solid(COLOURS["blue"]))}]})
    assert r.status_code == 200
    assert r.json()["items"] == len(COLOURS)
    assert call(server, "GET", "/colours/items/red").json()["metadata"] == {}
    # a vector made elsewhere, and a raw image with its id and metadata in the query
    vec = [0.0] * DIM
    vec[3] = 2.0
    r = call(server, "POST", "/colours/items", json={"items": [{"id": "axis-3", "vector": vec}]})
    assert r.status_code == 200
    assert r.json()["model"] is None
    r = call(
        server,
        "POST",
        "/colours/items",
        content=solid((10, 10, 10)),
        params={"id": "black", "metadata": '{"n": 1}'},
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 200, r.text
    assert call(server, "GET", "/colours/items/black").json()["metadata"] == {"n": 1}
    # without ?id= the id is the image's sha256, so the same bytes again replace, not duplicate
    grey = solid((90, 90, 90))
    for _ in range(2):
        r = call(server, "POST", "/colours/items", content=grey, headers={"content-type": "image/png"})
        assert r.json()["ids"] == [hashlib.sha256(grey).hexdigest()[:16]]
    call(server, "POST", "/colours/items:delete", json={"ids": r.json()["ids"]})
    assert call(server, "GET", "/colours").json()["items"] == len(COLOURS) + 2
    r = call(server, "POST", "/colours/items:delete", json={"ids": ["black", "axis-3", "not-there"]})
    assert r.json() == {"collection": "colours", "deleted": 2, "items": len(COLOURS)}
    assert call(server, "DELETE", "/colours/items/green").status_code == 204
    assert call(server, "DELETE", "/colours/items/green").json()["code"] == "item_not_found"
    assert call(server, "GET", "/colours/items/green").status_code == 404


HOSTILE_IDS = ["it's", "x' OR '1'='1", "a\\b", "名前", "id); DROP TABLE x; --"]


def test_hostile_ids_are_stored_and_matched_exactly(server: RunningServer) -> None:
    create(server)
    items = [{"id": i, "vector": list(np.eye(DIM)[n % DIM]), "metadata": {"n": n}} for n, i in enumerate(HOSTILE_IDS)]
    assert call(server, "POST", "/colours/items", json={"items": items}).status_code == 200
    r = call(server, "POST", "/colours/items:delete", json={"ids": ["x' OR '1'='1"]})
    assert r.json()["deleted"] == 1
    assert r.json()["items"] == len(HOSTILE_IDS) - 1
    for n, i in enumerate(HOSTILE_IDS):
        if i != "x' OR '1'='1":
            r = call(server, "GET", f"/colours/items/{httpx.URL(path=i).raw_path.decode()}")
            assert r.status_code == 200, (i, r.text)
            assert r.json() == {"id": i, "metadata": {"n": n}, "vector": None}


def test_collections_list_describe_drop_and_a_fresh_collection_of_the_same_name_is_empty(server: RunningServer) -> None:
    create(server)
    fill(server)
    listed = call(server, "GET", "").json()["collections"]
    assert [(c["name"], c["model"], c["items"]) for c in listed] == [("colours", "embed@1", len(COLOURS))]
    assert create(server).json()["code"] == "collection_exists"
    assert call(server, "DELETE", "/colours").status_code == 204
    assert call(server, "GET", "/colours").json()["code"] == "collection_not_found"
    assert create(server).status_code == 201
    assert call(server, "GET", "/colours").json()["items"] == 0


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "names"),
    [
        ("/colours:search", {"image": "###"}, 400, "invalid_request", "image"),
        ("/colours:search", {"k": 0, "vector": [1.0] * DIM}, 400, "invalid_request", "k"),
        ("/colours:search", {"k": 101, "vector": [1.0] * DIM}, 422, "invalid_field", "k"),
        ("/colours:search", {"vector": [1.0] * (DIM + 1)}, 422, "dimension_mismatch", "vector"),
        ("/colours:search", {"vector": [0.0] * DIM}, 422, "invalid_field", "vector"),
        ("/colours:search", {"id": "nobody"}, 404, "item_not_found", "nobody"),
        ("/colours:search", {"id": "red", "vector": [1.0] * DIM}, 422, "invalid_field", "exactly one"),
        ("/colours:search", {"image": b64(b"not an image")}, 422, "invalid_image", ""),
        ("/colours/items", {"items": []}, 400, "invalid_request", "items"),
        ("/colours/items", {"items": [{"id": "a", "vector": [1.0] * DIM}] * 2}, 422, "invalid_field", "items.1.id"),
        ("/colours/items", {"items": [{"id": "a"}]}, 422, "invalid_field", "items.0"),
        ("/colours/items", {"items": [{"id": "a\n", "vector": [1.0] * DIM}]}, 422, "invalid_field", "items.0.id"),
        ("/colours/items", {"items": [{"id": "a" * 257, "vector": [1.0] * DIM}]}, 422, "invalid_field", "items.0.id"),
        (
            "/colours/items",
            {"items": [{"id": "a", "vector": [1.0] * DIM, "metadata": {"x": "y" * 5000}}]},
            422,
            "invalid_field",
            "items.0.metadata",
        ),
        ("/colours/items", {"items": [{"id": "a", "vector": [1.0] * 3}]}, 422, "dimension_mismatch", "items.0.vector"),
        (
            "/colours/items",
            {"items": [{"id": str(i), "vector": [1.0] * DIM} for i in range(65)]},
            422,
            "invalid_field",
            "items",
        ),
        (
            "/colours/items",
            {"items": [{"id": "a", "vector": [1.0] * DIM, "extra": 1}]},
            400,
            "invalid_request",
            "extra",
        ),
        ("/nothing:search", {"vector": [1.0] * DIM}, 404, "collection_not_found", "nothing"),
    ],
)
def test_bad_input_is_a_clear_4xx_naming_the_field(
    server: RunningServer, path: str, body: dict[str, Any], status: int, code: str, names: str
) -> None:
    create(server)
    fill(server)
    r = call(server, "POST", path, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code
    assert names in r.json()["detail"]


def test_a_collection_needs_an_embedding_model_that_exists(server: RunningServer) -> None:
    r = create(server, model="classify")
    assert (r.status_code, r.json()["code"]) == (422, "invalid_field")
    assert "classification" in r.json()["detail"]
    assert create(server, model="nothing").json()["code"] == "model_not_found"
    r = call(server, "POST", "", json={"name": "Bad Name", "model": "embed"})
    assert r.status_code == 400
    assert "name" in r.json()["detail"]
    assert call(server, "GET", "").json()["collections"] == []


def test_images_embedded_are_metered_under_the_model(tmp_path: Path, serve: Callable[..., RunningServer]) -> None:
    s = serve(Settings(home=tmp_path / "home", metering=MeteringSettings(flush_s=0.2)))
    push(s, "embed", tiny_classifier(tmp_path / "embed.onnx", classes=DIM), EMBED_MANIFEST)
    create(s)
    fill(s)  # 5 images
    assert call(s, "POST", "/colours:search", json={"id": "red"}).status_code == 200  # no image: nothing metered
    r = call(s, "POST", "/colours:search", content=solid((1, 2, 3)), headers={"content-type": "image/png"})
    assert r.status_code == 200
    # a flush writes everything recorded so far at once: when the last search's image is
    # written, whatever the id search recorded (nothing) is written too
    deadline = time.monotonic() + 15
    while True:
        rows = httpx.get(f"{s.url}/v1/usage", params={"model": "embed"}, headers=s.headers, timeout=30).json()["rows"]
        if sum(row["images"] for row in rows) >= len(COLOURS) + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sum(row["images"] for row in rows) == len(COLOURS) + 1
    assert {(row["model"], row["version"], row["task"]) for row in rows} == {("embed", 1, "embedding")}


def test_scopes_and_tenancy(server: RunningServer) -> None:
    create(server)
    fill(server)

    def key(**body: Any) -> str:
        r = httpx.post(f"{server.url}/v1/keys", json={"name": "k", **body}, headers=server.headers, timeout=30)
        assert r.status_code == 201, r.text
        return str(r.json()["secret"])

    reader = key(scopes=["collections:read"])
    assert call(server, "POST", "/colours:search", reader, json={"id": "red"}).status_code == 200
    r = call(server, "POST", "/colours:search", reader, content=solid((1, 2, 3)), headers={"content-type": "image/png"})
    assert (r.status_code, r.json()["code"]) == (403, "insufficient_scope")  # embedding an image needs infer
    r = call(server, "POST", "/colours/items:delete", reader, json={"ids": ["red"]})
    assert (r.status_code, r.json()["code"]) == (403, "insufficient_scope")
    other = key(scopes=["collections:read", "collections:write", "infer"], models=["team-b-*"])
    assert call(server, "GET", "", other).json()["collections"] == []
    hidden = call(server, "POST", "/colours:search", other, json={"id": "red"})
    absent = call(server, "POST", "/nothing:search", other, json={"id": "red"})
    assert hidden.status_code == absent.status_code == 404
    assert hidden.json()["detail"].replace("colours", "X") == absent.json()["detail"].replace("nothing", "X")
    r = call(server, "POST", "", other, json={"name": "team-b-photos", "model": "embed"})
    assert (r.status_code, r.json()["code"]) == (404, "model_not_found")  # the model is not theirs either
    r = call(server, "POST", "", other, json={"name": "mine", "model": "embed"})
    assert (r.status_code, r.json()["code"]) == (403, "model_forbidden")


def test_without_authentication_a_bearer_is_not_needed(tmp_path: Path, serve: Callable[..., RunningServer]) -> None:
    s = serve(Settings(home=tmp_path / "home", auth=AuthSettings(enabled=False)))
    push(s, "embed", tiny_classifier(tmp_path / "embed.onnx", classes=DIM), EMBED_MANIFEST)
    assert create(s).status_code == 201


def test_the_sdk_adds_searches_reads_and_deletes(server: RunningServer) -> None:
    from imaas.client import AsyncClient, Client, Item

    with Client(server.url, api_key=server.key) as c:
        info = c.create_collection("colours", "embed", "solid colours")
        assert (info.dimension, info.items) == (DIM, 0)
        added = c.add_items("colours", [Item(k, image=solid(v), metadata={"colour": k}) for k, v in COLOURS.items()])
        assert (added.added, added.model, added.version, added.items) == (len(COLOURS), "embed", 1, len(COLOURS))
        hits = c.search("colours", image=solid((220, 40, 30)), k=2).neighbours
        assert hits[0].id == "red"
        assert hits[0].metadata == {"colour": "red"}
        assert [n.id for n in c.search("colours", item_id="red", k=1).neighbours] != ["red"]
        blue = c.get_item("colours", "blue", vector=True).vector
        assert blue is not None
        assert np.allclose(blue, expected(COLOURS["blue"]), atol=1e-5)
        assert c.delete_items("colours", ["red", "nope"]).deleted == 1
        assert [x.name for x in c.list_collections()] == ["colours"]

    async def run() -> None:
        async with AsyncClient(server.url, api_key=server.key) as a:
            assert (await a.get_collection("colours")).items == len(COLOURS) - 1
            await a.drop_collection("colours")
            assert await a.list_collections() == []

    import asyncio

    asyncio.run(run())


def test_the_cli_adds_searches_and_drops(server: RunningServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from imaas.cli.main import app

    runner = CliRunner()
    at = ["--url", server.url, "--api-key", server.key]
    files = []
    for name, colour in COLOURS.items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(solid(colour))
        files.append(str(path))
    made = runner.invoke(app, ["collections", "create", "colours", "embed", *at])
    assert made.exit_code == 0, made.output
    assert f"dimension {DIM}" in made.output
    added = runner.invoke(app, ["collections", "add", "colours", *files, "--metadata", '{"set": "a"}', *at])
    assert added.exit_code == 0, added.output
    assert f"added {len(COLOURS)}" in added.output
    query = tmp_path / "query.png"
    query.write_bytes(solid((220, 40, 30)))
    found = runner.invoke(app, ["collections", "search", "colours", str(query), "-k", "2", "--json", *at])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.output)["neighbours"]
    assert hits[0]["id"] == "red.png"
    assert hits[0]["metadata"] == {"set": "a"}
    table = runner.invoke(app, ["collections", "search", "colours", "--id", "red.png", *at])
    assert "orange.png" in table.output
    bad = runner.invoke(app, ["collections", "search", "colours", "--id", "nobody", *at])
    assert bad.exit_code != 0
    assert "item_not_found" in bad.output or "nobody" in bad.output
    dropped = runner.invoke(app, ["collections", "drop", "colours", "--yes", *at])
    assert dropped.exit_code == 0, dropped.output
    assert runner.invoke(app, ["collections", "list", "--json", *at]).output.strip() == "[]"


def test_a_collection_stays_on_the_version_it_was_made_with(server: RunningServer, tmp_path: Path) -> None:
    create(server)
    fill(server)
    # embed@2 answers vectors of another dimension and becomes production: the collection,
    # pinned to embed@1 when it was made, keeps answering with embed@1
    push(server, "embed", tiny_classifier(tmp_path / "embed2.onnx", classes=DIM // 2), EMBED_MANIFEST)
    r = httpx.post(f"{server.url}/v1/models/embed/promote", json={"version": 2}, headers=server.headers, timeout=60)
    assert r.status_code == 200, r.text
    png = {"content-type": "image/png"}
    r = call(server, "POST", "/colours:search", content=solid((220, 40, 30)), headers=png)
    assert r.status_code == 200, r.text
    assert (r.json()["model"], r.json()["version"]) == ("embed", 1)
    assert r.json()["neighbours"][0]["id"] == "red"
    # a new collection over the alias takes the new version
    assert create(server, "halves").json()["model"] == "embed@2"
    assert call(server, "GET", "/halves").json()["dimension"] == DIM // 2


def test_concurrent_adds_of_one_id_leave_one_item(server: RunningServer) -> None:
    create(server)
    start = threading.Barrier(8)

    def add(n: int) -> int:
        vec = [0.0] * DIM
        vec[n % DIM] = 1.0
        start.wait()
        return call(server, "POST", "/colours/items", json={"items": [{"id": "same", "vector": vec}]}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(add, range(8))) == [200] * 8
    assert call(server, "GET", "/colours").json()["items"] == 1
    r = call(server, "POST", "/colours:search", json={"vector": [1.0] * DIM, "k": 10})
    assert [n["id"] for n in r.json()["neighbours"]] == ["same"]


def test_a_limited_key_gets_ratelimit_headers_and_creates_are_audited(server: RunningServer) -> None:
    r = httpx.post(
        f"{server.url}/v1/keys",
        json={
            "name": "quota",
            "scopes": ["collections:read", "collections:write", "infer"],
            "limits": {"images_per_day": 3},
        },
        headers=server.headers,
        timeout=30,
    )
    assert r.status_code == 201, r.text
    key = r.json()["secret"]
    assert create(server).status_code == 201
    png = {"content-type": "image/png"}
    r = call(server, "POST", "/colours/items", key, content=solid(COLOURS["red"]), params={"id": "red"}, headers=png)
    assert r.status_code == 200, r.text
    assert '"day";q=3' in r.headers["ratelimit-policy"]
    assert '"day";r=2' in r.headers["ratelimit"]
    r = call(server, "POST", "/colours:search", key, content=solid(COLOURS["blue"]), headers=png)
    assert '"day";r=1' in r.headers["ratelimit"]
    audit = httpx.get(f"{server.url}/v1/audit", headers=server.headers, timeout=30).json()
    made = [e for e in audit["entries"] if e["action"] == "collection.create"]
    assert [(e["target"], e["detail"].get("model")) for e in made] == [("colours", "embed@1")]
