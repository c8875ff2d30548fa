"""Makes the broker's topics match the app's declarations before anything is consumed."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..errors import TopologyError
from ..topic import Topic
from ..transport.base import Admin

log = logging.getLogger("streamkit.topics")


async def ensure_topics(admin: Admin, topics: Sequence[Topic]) -> None:
    """Create missing topics; adopt the count of existing ones whose count was not declared.

    A declared count that differs from the broker's is refused: keys would land on
    other partitions than the app expects (DESIGN.md invariant 5).
    """
    existing = await admin.partition_counts([t.name for t in topics])
    mismatched = [
        f"topic {t.name!r} has {existing[t.name]} partitions on the broker but the app "
        f"declares {t.declared_partitions}"
        for t in topics
        if t.name in existing
        and t.declared_partitions is not None
        and existing[t.name] != t.declared_partitions
    ]
    if mismatched:
        raise TopologyError("; ".join(mismatched))
    for topic in topics:
        if topic.name in existing:
            topic.partitions = existing[topic.name]
        topic.partitions_known = True
    missing = [t for t in topics if t.name not in existing]
    if missing:
        await admin.create_topics([t.spec() for t in missing])
        log.info("created topics: %s", ", ".join(f"{t.name}[{t.partitions}]" for t in missing))
