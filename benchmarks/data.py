"""The input data: deterministic JSON payments over a fixed set of user ids."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Sequence

from aiokafka.partitioner import murmur2

SEED = 20_241_125
EPOCH = 1_700_000_000.0  # the fixed data's timestamps start here


def user_id(n: int) -> str:
    return f"user-{n:06d}"


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner, as streamkit and Java producers use it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def payment_json(user: str, amount: float, timestamp: float) -> bytes:
    return json.dumps(
        {"user_id": user, "amount": amount, "timestamp": timestamp}, separators=(",", ":")
    ).encode()


def payments(count: int, keys: int) -> list[tuple[bytes, bytes]]:
    """`count` (key, value) records; every one of `keys` user ids appears (count >= keys),
    in a shuffled but fixed order. A value is about 70 bytes."""
    rng = random.Random(SEED)
    order = [i % keys for i in range(count)]
    rng.shuffle(order)
    out = []
    for i, k in enumerate(order):
        user = user_id(k)
        amount = round(rng.uniform(1.0, 10_000.0), 2)
        out.append((user.encode(), payment_json(user, amount, round(EPOCH + i / 1000, 3))))
    return out


def changelog(count: int, keys: int) -> tuple[list[tuple[bytes, bytes]], Counter[bytes]]:
    """What the count app's changelog holds after `count` inputs, one record per update
    (no write-behind, no compaction): `count` records of decimal counts. Returns the
    records and each key's final count."""
    totals: Counter[bytes] = Counter()
    out = []
    for key, _ in payments(count, keys):
        totals[key] += 1
        out.append((key, str(totals[key]).encode()))
    return out, totals


def stamped(keys: Sequence[bytes], rng: random.Random) -> tuple[bytes, bytes]:
    """A record for the latency run: the send time (time.time()) in its timestamp."""
    key = keys[rng.randrange(len(keys))]
    return key, payment_json(key.decode(), round(rng.uniform(1.0, 10_000.0), 2), time.time())


def users(keys: int) -> list[tuple[bytes, bytes]]:
    """The join's table: one row per user id, every tier "gold"."""
    return [
        (user_id(k).encode(), json.dumps({"user_id": user_id(k), "tier": "gold"}).encode())
        for k in range(keys)
    ]
