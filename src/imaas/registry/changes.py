"""The registry's change log: one sequence for every write, a model's history, rollbacks.

Every write transaction starts with ``lock_registry``, which locks the single
``registry_state`` row (PostgreSQL ``SELECT ... FOR UPDATE``; on SQLite the transaction
already holds the database write lock from ``BEGIN IMMEDIATE``). Writes therefore run one at
a time, and each event ``record`` stamps takes the next number of the sequence while the
lock is held: sequence numbers commit in increasing order. That is what makes the change
feed safe to poll with ``seq > last``: no change can commit later with a smaller number
than one a poller has already seen (a per-row autoincrement would allow exactly that, on
PostgreSQL, when two transactions commit in the other order).

Rollbacks follow the history as a stack: each alias move (an event naming the alias and
a version it moved to, other than ``canary``/``shadow``) pushes, each ``rollback`` pops the
move it undid, so repeated rollbacks walk back v3 -> v2 -> v1, and a promote after a
rollback is what the next rollback undoes.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaas.domain import ModelEvent, RollbackPlan
from imaas.errors import NothingToRollBack
from imaas.registry.tables import EventRow, StateRow, utcnow

ROUTE_ACTIONS = frozenset({"canary", "shadow"})
"""Actions of events that name an alias without moving it (they change its canary or shadow)."""

NOT_MOVES = ROUTE_ACTIONS | {"delete", "edit"}
"""Actions an alias move may not be recorded as; any other (``alias``, ``promote``,
``rollback``, ``push``...) is a move, which a rollback can undo."""


def lock_registry(s: Session) -> StateRow:
    """Lock the registry for this write transaction and return its sequence row.

    Call first in every write transaction: on PostgreSQL the row lock makes concurrent
    writers queue here, before they read anything they decide on.
    """
    state = s.get(StateRow, 1, with_for_update=True)
    if state is None:
        raise RuntimeError("the registry database has no registry_state row: was it migrated by Alembic?")
    return state


def record(
    s: Session,
    state: StateRow,
    model: str,
    action: str,
    *,
    alias: str | None = None,
    from_version: int | None = None,
    to_version: int | None = None,
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an event to the transaction holding ``state``'s lock, numbered by the next ``seq``."""
    state.seq += 1
    s.add(
        EventRow(
            seq=state.seq,
            model=model,
            action=action,
            alias=alias,
            from_version=from_version,
            to_version=to_version,
            actor=actor,
            at=utcnow(),
            detail=detail or {},
        )
    )


def to_event(row: EventRow) -> ModelEvent:
    """The domain form of an event row."""
    return ModelEvent(
        seq=row.seq,
        model=row.model,
        action=row.action,
        alias=row.alias,
        from_version=row.from_version,
        to_version=row.to_version,
        actor=row.actor,
        at=row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC),
        detail=dict(row.detail or {}),
    )


def history(s: Session, model: str, limit: int, before: int | None) -> list[ModelEvent]:
    """``model``'s events newest first, keyset-paged on ``(model, seq)``."""
    q = select(EventRow).where(EventRow.model == model)
    if before is not None:
        q = q.where(EventRow.seq < before)
    return [to_event(r) for r in s.scalars(q.order_by(EventRow.seq.desc()).limit(max(limit, 0)))]


def changes_since(s: Session, seq: int) -> tuple[int, set[str]]:
    """The newest committed ``seq`` and the models with events after ``seq`` up to it.

    The bound ``<= newest`` keeps the answer consistent when a write commits between the two
    reads: its events are left for the next poll, which asks from ``newest``.
    """
    newest = s.scalar(select(StateRow.seq).where(StateRow.id == 1)) or 0
    if seq >= newest:
        return newest, set()
    q = select(EventRow.model).where(EventRow.seq > seq, EventRow.seq <= newest).distinct()
    return newest, set(s.scalars(q))


def alias_moves(s: Session, model: str, alias: str) -> list[ModelEvent]:
    """Every recorded move of ``alias`` of ``model``, oldest first."""
    q = (
        select(EventRow)
        .where(
            EventRow.model == model,
            EventRow.alias == alias,
            EventRow.to_version.is_not(None),
            EventRow.action.not_in(ROUTE_ACTIONS),
        )
        .order_by(EventRow.seq)
    )
    return [to_event(r) for r in s.scalars(q)]


def plan_rollback(model: str, alias: str, current: int, moves: list[ModelEvent]) -> RollbackPlan:
    """Where a rollback of ``alias`` (now at ``current``) goes, given its ``moves`` oldest first.

    Moves form a stack: a ``rollback`` pops the move it names in ``detail["undoes"]`` (and
    anything recorded above it), or the top one when it names none. The plan undoes the top
    of what remains, back to the version that move left. ``NothingToRollBack`` when nothing
    remains or the top move created the alias (there is no version before it).

    >>> from datetime import datetime
    >>> at = datetime(2026, 1, 1)
    >>> moves = [ModelEvent(s, "m", "alias", "production", s - 1 or None, s, None, at) for s in (1, 2, 3)]
    >>> plan_rollback("m", "production", 3, moves)
    RollbackPlan(alias='production', current=3, target=2, undoes=3)
    """
    stack: list[ModelEvent] = []
    for move in moves:
        if move.action != "rollback":
            stack.append(move)
            continue
        undoes = move.detail.get("undoes")
        if isinstance(undoes, int) and any(m.seq == undoes for m in stack):
            while stack.pop().seq != undoes:
                pass
        elif stack:
            stack.pop()
    if not stack or stack[-1].from_version is None:
        raise NothingToRollBack(f"alias {alias!r} of {model!r} has no earlier version to roll back to")
    top = stack[-1]
    assert top.from_version is not None
    return RollbackPlan(alias=alias, current=current, target=top.from_version, undoes=top.seq)
