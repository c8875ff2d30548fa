"""What to do with a committed offset that retention has overtaken.

Kafka clients reset such offsets silently; streamkit says which partition, which
offsets, and what it did, by the app's `auto_offset_reset` policy. Both transports
apply it at assignment.
"""

from __future__ import annotations

import logging

from ..errors import TransportError
from .base import TopicPartition

log = logging.getLogger("streamkit.offsets")

POLICIES = ("earliest", "latest", "fail")


def resume_position(policy: str, tp: TopicPartition, committed: int, first: int, end: int) -> int:
    """Where to resume a partition whose committed offset is below its log start."""
    where = f"{tp.topic}[{tp.partition}]"
    if policy == "fail":
        raise TransportError(
            f"committed offset {committed} of {where} is below the log start {first}: "
            f"retention deleted {first - committed} records before they were processed; "
            "auto_offset_reset=fail stops here (earliest or latest go on)"
        )
    resumed = first if policy == "earliest" else end
    log.warning(
        "committed offset %d of %s is below the log start %d (retention deleted unprocessed "
        "records): auto_offset_reset=%s resumes at %d",
        committed,
        where,
        first,
        policy,
        resumed,
    )
    return resumed
