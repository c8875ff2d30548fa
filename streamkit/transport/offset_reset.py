"""What to do with a committed offset outside its partition's log.

Retention overtakes a committed offset (below the log start); a topic deleted and
recreated, or truncated, leaves one past the log end. Kafka clients reset both
silently; streamkit says which partition, which offsets, and what it did, by the
app's `auto_offset_reset` policy. Both transports apply it at assignment, and the
Kafka transport also when a fetch answers "offset out of range".
"""

from __future__ import annotations

import logging

from ..errors import TransportError
from .base import TopicPartition

log = logging.getLogger("streamkit.offsets")

POLICIES = ("earliest", "latest", "fail")


def resume_position(policy: str, tp: TopicPartition, committed: int, first: int, end: int) -> int:
    """Where to resume a partition whose committed offset is outside [first, end]."""
    where = f"{tp.topic}[{tp.partition}]"
    if committed > end:
        problem = (
            f"committed offset {committed} of {where} is past the log end {end}: "
            "the topic was deleted and recreated, or truncated"
        )
    else:
        problem = (
            f"committed offset {committed} of {where} is below the log start {first}: "
            f"retention deleted {first - committed} records before they were processed"
        )
    if policy == "fail":
        raise TransportError(
            f"{problem}; auto_offset_reset=fail stops here (earliest or latest go on)"
        )
    resumed = first if policy == "earliest" else end
    log.warning("%s; auto_offset_reset=%s resumes at %d", problem, policy, resumed)
    return resumed
