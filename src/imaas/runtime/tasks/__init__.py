"""One module per vision task (the contract is ``base.Task``); ``task(name)`` finds one.

Adding a task: its module here, its result schema in ``imaas.schemas.results``, and one
line in ``_TASKS``.

Example::

    manifest = complete_manifest(Manifest(task="detection"), check_model_file(path))
    result = task(manifest.task).postprocess(outputs, geometry, Labelled(manifest, labels), options)
"""

from __future__ import annotations

from imaas.errors import InvalidManifest
from imaas.runtime.graph import GraphInfo, complete_input
from imaas.runtime.tasks.base import Labelled, OipOutput, Task
from imaas.runtime.tasks.classification import Classification
from imaas.runtime.tasks.detection import Detection
from imaas.runtime.tasks.embedding import Embedding
from imaas.schemas.manifest import Manifest

__all__ = ["Labelled", "OipOutput", "Task", "complete_manifest", "served_tasks", "task"]

_TASKS: dict[str, Task] = {t.name: t for t in (Classification(), Detection(), Embedding())}


def task(name: str) -> Task:
    """The task ``name``; ``InvalidManifest`` for a task imaas does not serve (yet)."""
    try:
        return _TASKS[name]
    except KeyError:
        raise InvalidManifest(f"task: {name!r} models cannot be served; supported: {served_tasks()}") from None


def served_tasks() -> list[str]:
    """The names of the tasks imaas serves."""
    return sorted(_TASKS)


def complete_manifest(manifest: Manifest, graph: GraphInfo) -> Manifest:
    """Fill the manifest's blanks from ``graph`` and check it against the graph: the input
    (``graph.complete_input``), then the outputs as its task reads them (``Task.check``)."""
    served = task(manifest.task)
    return served.check(complete_input(manifest, graph), graph)
