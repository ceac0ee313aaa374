"""From archive members to labelled images: both layouts, every drop reason, the report's numbers."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from PIL import Image

from imaas.errors import InvalidDataset
from imaas.training.archive import Member
from imaas.training.dataset import REASONS, collect
from tests.factories import png_header_only


def noisy(seed: int, size: tuple[int, int] = (32, 24), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    """A random-pixel image: never blank, and different bytes for every seed."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, fmt)
    return buf.getvalue()


def flat(value: int, size: tuple[int, int] = (32, 32), noise: int = 0) -> bytes:
    """A uniform gray image, optionally with +-``noise`` of jitter."""
    rng = np.random.default_rng(value)
    arr = np.full((size[1], size[0]), value, dtype=np.int16) + rng.integers(-noise, noise + 1, (size[1], size[0]))
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


def test_folders_layout_under_a_single_top_folder() -> None:
    members = [
        Member("digits/1/e.png", noisy(5)),
        Member("digits/0/b.png", noisy(2)),
        Member("digits/0/a.png", noisy(1)),
        Member("digits/1/c.png", noisy(3)),
        Member("digits/1/sub/d.png", noisy(4)),  # deeper folders still belong to class "1"
        Member("digits/x.png", noisy(6)),  # directly at the root
    ]
    images, report = collect(members)
    assert [(i.label, i.name) for i in images] == [
        ("0", "digits/0/a.png"),
        ("0", "digits/0/b.png"),
        ("1", "digits/1/c.png"),
        ("1", "digits/1/e.png"),
        ("1", "digits/1/sub/d.png"),
    ]
    assert report.layout == "folders"
    assert report.class_counts == {"0": 2, "1": 3}
    assert report.imbalance == pytest.approx(3 / 2)
    assert [(d.name, d.reason) for d in report.dropped] == [("digits/x.png", "unlabelled")]
    assert report.files == 6


def test_image_fields_come_from_the_bytes() -> None:
    import hashlib

    cat, dog = noisy(1, (40, 30)), noisy(2, (16, 16), mode="L", fmt="BMP")
    images, report = collect([Member("cat/a.png", cat), Member("dog/b.bmp", dog)])
    a, b = images
    assert (a.sha256, a.data, a.format, a.width, a.height, a.channels) == (
        hashlib.sha256(cat).hexdigest(), cat, "PNG", 40, 30, 3,
    )
    assert (b.format, b.width, b.height, b.channels) == ("BMP", 16, 16, 1)
    assert report.channels == 1  # a tie (one of each) goes to the smaller count, independent of order


def test_every_drop_reason_is_produced_and_counted() -> None:
    png = noisy(99)
    same_bytes = noisy(50)
    members = [
        Member("__MACOSX/cat/._a.png", b"resource fork"),
        Member("cat/.DS_Store", b"\x00\x00"),
        Member("dog/Thumbs.db", b"\x00"),
        Member("cat/notes.txt", b"these are cats"),
        Member("cat/broken.png", png[: len(png) // 2]),  # a real header, the data cut off
        Member("dog/fake.jpg", b"definitely not a jpeg"),
        Member("dog/huge.png", png_header_only(10_000, 10_000)),
        Member("cat/tiny.png", noisy(7, (4, 30))),
        Member("cat/blank.png", flat(128)),
        Member("dog/almost_blank.png", flat(90, noise=1)),
        Member("cat/a_copy.png", noisy(1)),  # listed first; the copy kept is the first by name
        Member("cat/a.png", noisy(1)),
        Member("cat/b.png", noisy(2)),
        Member("cat/ambiguous.png", same_bytes),
        Member("dog/ambiguous_too.png", same_bytes),
        Member("dog/c.png", noisy(3)),
        Member("dog/d.png", noisy(4)),
        Member("dog/e.png", noisy(5, (40, 40))),
        Member("root.png", noisy(6)),
    ]
    images, report = collect(members)
    assert {d.name: d.reason for d in report.dropped} == {
        "__MACOSX/cat/._a.png": "ignored",
        "cat/.DS_Store": "ignored",
        "dog/Thumbs.db": "ignored",
        "cat/notes.txt": "not_image",
        "cat/broken.png": "corrupt",
        "dog/fake.jpg": "corrupt",
        "dog/huge.png": "too_large",
        "cat/tiny.png": "tiny",
        "cat/blank.png": "blank",
        "dog/almost_blank.png": "blank",
        "cat/a_copy.png": "duplicate",
        "cat/ambiguous.png": "cross_class_duplicate",
        "dog/ambiguous_too.png": "cross_class_duplicate",
        "root.png": "unlabelled",
    }
    assert set(report.by_reason) == set(REASONS)
    assert report.by_reason["ignored"] == 3
    assert report.by_reason["blank"] == 2
    assert report.by_reason["cross_class_duplicate"] == 2
    assert [i.name for i in images] == ["cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png", "dog/e.png"]
    assert report.class_counts == {"cat": 2, "dog": 3}
    assert report.kept == 5
    assert report.files == len(members) == report.kept + len(report.dropped)
    assert report.imbalance == pytest.approx(1.5)
    # sizes of the kept: four 32x24 and one 40x40
    s = report.sizes
    assert (s.most_common, s.most_common_count, s.min_side, s.max_side) == ((32, 24), 4, 24, 40)
    assert report.channels == 3
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["dropped"]["by_reason"]["ignored"] == 3
    assert len(as_dict["dropped"]["items"]) == 14


def test_cross_class_duplicates_are_dropped_from_every_class() -> None:
    shared = noisy(42)
    members = [Member(f"{label}/{i}.png", noisy(10 * k + i)) for k, label in enumerate("abc") for i in range(3)]
    members += [Member("a/shared.png", shared), Member("b/shared.png", shared), Member("b/shared2.png", shared)]
    images, report = collect(members)
    assert shared not in {i.data for i in images}
    assert sorted(d.name for d in report.dropped if d.reason == "cross_class_duplicate") == [
        "a/shared.png", "b/shared.png", "b/shared2.png",
    ]
    assert report.class_counts == {"a": 3, "b": 3, "c": 3}


def test_labels_csv_with_paths_relative_to_its_folder() -> None:
    csv_text = "Filename, Class\nimg/a.png, cat \nimg/b.png,cat\nimg/c.png,dog\nimg/d.png,dog\nimg/e.png,dog\n"
    csv_text += "img/gone.png,dog\nimg/gone2.png,bird\n"
    members = [
        Member("export/data/labels.csv", csv_text.encode("utf-8-sig")),
        Member("export/data/img/meta.json", b'{"not": "the labels file, it is deeper"}'),
        *(Member(f"export/data/img/{n}.png", noisy(i)) for i, n in enumerate("abcde")),
        Member("export/data/img/extra.png", noisy(77)),
    ]
    images, report = collect(members)
    assert report.layout == "labels-file"
    assert report.labels_file == "export/data/labels.csv"
    assert [(i.label, i.name.rsplit("/", 1)[1]) for i in images] == [
        ("cat", "a.png"), ("cat", "b.png"), ("dog", "c.png"), ("dog", "d.png"), ("dog", "e.png"),
    ]
    assert report.missing_files == ["export/data/img/gone.png", "export/data/img/gone2.png"]
    assert report.empty_classes == ["bird"]
    assert {d.name: d.reason for d in report.dropped} == {
        "export/data/img/meta.json": "not_image",
        "export/data/img/extra.png": "unlabelled",
    }
    assert report.imbalance == pytest.approx(1.5)
    assert report.files == len(members) == report.kept + len(report.dropped) + 1  # + the labels file


@pytest.mark.parametrize(
    "doc",
    [
        {"a.png": "cat", "b.png": "cat", "c.png": 7, "d.png": 7},
        [{"file": "a.png", "label": "cat"}, {"file": "b.png", "label": "cat"},
         {"image": "c.png", "class": 7}, {"path": "d.png", "label": "7"}],
    ],
)
def test_labels_json_as_object_or_list(doc: object) -> None:
    members = [Member("labels.json", json.dumps(doc).encode())]
    members += [Member(f"{n}.png", noisy(i)) for i, n in enumerate("abcd")]
    images, report = collect(members)
    # sorted by (label, name): "7" sorts before "cat"
    assert [(i.name, i.label) for i in images] == [("c.png", "7"), ("d.png", "7"), ("a.png", "cat"), ("b.png", "cat")]
    assert report.class_counts == {"7": 2, "cat": 2}


def test_two_labels_files_at_the_shallowest_depth_are_ambiguous() -> None:
    members = [Member("a/labels.csv", b"file,label\n"), Member("b/labels.json", b"{}"), Member("deep/er/c.csv", b"")]
    with pytest.raises(InvalidDataset) as err:
        collect(members)
    assert "'a/labels.csv'" in err.value.detail
    assert "'b/labels.json'" in err.value.detail


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ("file,label\na.png,   \n", "row 2: the label is empty"),
        ("file,label\na.png," + "x" * 129 + "\n", "longer than 128"),
        ("file,label\na.png,ca\x07t\n", "control character"),
        ("file,category\na.png,cat\n", "no label column"),
        ("file,label\na.png,cat\na.png,dog\n", "labelled both 'cat' and 'dog'"),
    ],
)
def test_bad_labels_are_refused_naming_the_row(rows: str, words: str) -> None:
    members = [Member("labels.csv", rows.encode()), Member("a.png", noisy(1)), Member("b.png", noisy(2))]
    with pytest.raises(InvalidDataset, match=words):
        collect(members)


def test_one_class_is_not_a_dataset() -> None:
    with pytest.raises(InvalidDataset) as err:
        collect([Member("cat/a.png", noisy(1)), Member("cat/b.png", noisy(2)), Member("dog/c.txt", b"x")])
    assert "at least 2 classes; found 1: 'cat'" in err.value.detail


def test_missing_files_only_is_fatal_and_says_so() -> None:
    members = [Member("labels.csv", b"file,label\na.png,cat\nb.png,dog\n"), Member("a.png", noisy(1))]
    with pytest.raises(InvalidDataset, match=r"found 1: 'cat' \(1 files named by labels.csv are missing\)"):
        collect(members)


def test_output_does_not_depend_on_member_order() -> None:
    members = [Member(f"{label}/{i}.png", noisy(10 * k + i)) for k, label in enumerate("xyz") for i in range(4)]
    members.append(Member("x/dup.png", noisy(0)))
    shuffled = members[:]
    random.Random(3).shuffle(shuffled)
    first, second = collect(members), collect(shuffled)
    assert first[0] == second[0]
    assert first[1].to_dict() == second[1].to_dict()
