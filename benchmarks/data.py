"""The input data: deterministic JSON payments over a fixed set of user ids."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence

from aiokafka.partitioner import murmur2

from streamkit.serde import IntSerde, StrSerde
from streamkit.state.timestamped import TimestampedSerde, ValueAndTimestamp
from streamkit.state.window_stores import Windowed, WindowedKeySerde

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


# The cost curve (benchmarks/curve.py): state of many keys, restored from a changelog,
# then inputs spread over all of them, inside one window of the windowed count.
CURVE_WINDOW_MS = int(EPOCH * 1000)  # a window start: EPOCH is a multiple of 10 s
_SPREAD = 2_654_435_761  # a prime: i -> i * _SPREAD % keys visits every key once


def curve_user(n: int) -> bytes:
    return b"user-%07d" % n


def base_count(key: bytes) -> int:
    """The count a curve key has in its changelog (1 to 5, by its number)."""
    return int(key[5:]) % 5 + 1


def curve_keys(keys: int) -> Iterator[bytes]:
    """Every key once, in a scattered order (a changelog is not sorted by key)."""
    return (curve_user(i * _SPREAD % keys) for i in range(keys))


def curve_changelog(keys: int) -> Iterator[tuple[bytes, bytes]]:
    """The count app's changelog: one record per key, its count."""
    return ((key, b"%d" % base_count(key)) for key in curve_keys(keys))


def curve_window_changelog(keys: int) -> Iterator[tuple[bytes, bytes]]:
    """The windowed count's changelog, as its window store writes it: one window per
    key, all starting at CURVE_WINDOW_MS, each with the key's count."""
    key_serde = WindowedKeySerde(StrSerde())
    value_serde = TimestampedSerde(IntSerde())
    end = CURVE_WINDOW_MS + 10_000
    for key in curve_keys(keys):
        window = Windowed(key.decode(), CURVE_WINDOW_MS, end)
        count = ValueAndTimestamp(base_count(key), CURVE_WINDOW_MS)
        yield key_serde.serialize(window) or b"", value_serde.serialize(count) or b""


def window_routing(window_key: bytes) -> bytes:
    """The grouped key inside a window store's changelog key (`len | key | start | end`):
    what the record is partitioned by."""
    length = int.from_bytes(window_key[:4], "big")
    return window_key[4 : 4 + length]


def curve_inputs(count: int, keys: int) -> list[tuple[bytes, bytes]]:
    """`count` payments of keys drawn uniformly from `keys`, all inside the window
    starting at CURVE_WINDOW_MS (9 s of it)."""
    rng = random.Random(SEED)
    out = []
    for i in range(count):
        key = curve_user(rng.randrange(keys))
        ts = (CURVE_WINDOW_MS + i * 9_000 // count) / 1000
        out.append((key, payment_json(key.decode(), 1.0 + i % 1000, ts)))
    return out
