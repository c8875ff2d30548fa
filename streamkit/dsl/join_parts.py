"""What the joins share: how a joiner meets a missing side, the stores a join reads
through a table's lookups, the co-partition group, and the changelogs of join stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ..serde import PythonSerde, Serde
from ..state.table import Table
from ..topic import Topic
from .graph import CopartitionGroup, NodeSpec

if TYPE_CHECKING:
    from ..app import App

JoinHow = Literal["inner", "left", "outer"]
Joiner = Callable[[Any, Any], Any]  # (left value, right value) -> joined value

PYTHON = PythonSerde()
DAY_MS = 86_400_000


def combine(how: JoinHow, joiner: Joiner, left: Any, right: Any) -> Any:
    """The joined value of a table row pair, None when the join has no row for it."""
    if left is None and (how != "outer" or right is None):
        return None
    if right is None and how == "inner":
        return None
    return joiner(left, right)


def stores_behind(node: NodeSpec) -> tuple[Table, ...]:
    """The stores a table's value getter may read: those of the node and its ancestors.

    A lookup node declares them so that it runs in the task that holds them (one
    sub-topology) and its graph reaches their shards.
    """
    found: dict[str, Table] = {}
    pending, seen = [node], {id(node)}
    while pending:
        current = pending.pop()
        found.update((t.name, t) for t in current.stores)
        for parent in current.parents:
            if id(parent) not in seen:
                seen.add(id(parent))
                pending.append(parent)
    return tuple(found.values())


def copartition(app: App, what: str, left: NodeSpec, right: NodeSpec) -> None:
    app.graph.copartition_groups.append(CopartitionGroup(what=what, sides=(left, right)))


def changelog_topic(
    app: App, store: str, key: Serde[Any], value: Serde[Any], **config: str
) -> Topic:
    return Topic(f"{app.id}-{store}-changelog", key_type=key, value_type=value, config=config)
