"""The apps the benchmarks run as real `streamkit worker` processes.

Each reads its names from the environment, so that every run gets its own
consumer group and topics:

- `SKB_APP_ID`: the app id (consumer group, changelog prefix);
- `SKB_INPUT`, `SKB_OUTPUT`: source and sink topics;
- `SKB_PARTITIONS`: their partition count (4 unless set).
"""

from __future__ import annotations

import os

from pydantic import BaseModel


class Payment(BaseModel):
    """One input record's value: about 70 bytes of JSON."""

    user_id: str
    amount: float
    timestamp: float  # seconds since the epoch; the latency run stamps the send time here


class User(BaseModel):
    """A row of the stream-table join's users table."""

    user_id: str
    tier: str


class Enriched(BaseModel):
    """The stream-table join's output: a payment with its user's tier."""

    user_id: str
    amount: float
    tier: str | None


def env(name: str) -> str:
    try:
        return os.environ[name]
    except KeyError:
        raise RuntimeError(f"benchmark apps need {name} in the environment") from None


def partitions() -> int:
    return int(os.environ.get("SKB_PARTITIONS", "4"))
