"""The counting-table app of tests/apps/sk_counting_table.py, as its tests see it.

`counts[key] += 1` per input, output `<count> <partition> <offset> <worker>` under
the input's key; the table's changelog is `<app id>-counts-changelog`, one partition
per task (4). Each test has its own app id and topics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cluster import (
    Cluster,
    Produced,
    Producer,
    Record,
    create_topic,
    ends_of,
    partition_of,
    read_topic,
    wait_for_commits,
)

APP = "sk_counting_table:app"
PARTITIONS = 4
TASKS = frozenset(f"0_{p}" for p in range(PARTITIONS))


@dataclass(frozen=True)
class Count:
    key: str
    count: int
    partition: int
    offset: int
    worker: str


@dataclass
class Counting:
    url: str
    app_id: str
    input: str
    output: str

    @property
    def changelog(self) -> str:
        return f"{self.app_id}-counts-changelog"

    @property
    def env(self) -> dict[str, str]:
        return {"SKT_APP_ID": self.app_id, "SKT_INPUT": self.input, "SKT_OUTPUT": self.output}

    async def create_topics(self) -> None:
        await create_topic(self.url, self.input, PARTITIONS)
        await create_topic(self.url, self.output, PARTITIONS)

    async def outputs(self) -> list[Count]:
        out = []
        for r in await read_topic(self.url, self.output, PARTITIONS):
            assert r.key is not None and r.value is not None
            count, partition, offset, worker = r.value.decode().split()
            out.append(Count(r.key.decode(), int(count), int(partition), int(offset), worker))
        return out

    async def changelog_records(self) -> list[Record]:
        return await read_topic(self.url, self.changelog, PARTITIONS, timeout=60)

    async def changelog_values(self) -> dict[str, int]:
        """The last value of each key in the changelog (a key lives in one partition)."""
        values: dict[str, int] = {}
        for r in await self.changelog_records():
            assert r.key is not None
            assert partition_of(r.key, PARTITIONS) == r.partition, r
            if r.value is None:
                values.pop(r.key.decode(), None)
            else:
                values[r.key.decode()] = int(r.value)
        return values

    async def settle(self, running: Cluster, produced: Sequence[Produced]) -> list[Count]:
        await wait_for_commits(
            self.url,
            self.app_id,
            self.input,
            ends_of(produced, PARTITIONS),
            timeout=45,
            details=running.output,
        )
        return await self.outputs()


async def write_changelog(
    counting: Counting, values: dict[str, int], *, max_batch_size: int = 65_536
) -> list[Produced]:
    """Write a table's changelog as a previous worker would have, in big batches."""
    await create_topic(
        counting.url, counting.changelog, PARTITIONS, config={"cleanup.policy": "compact"}
    )
    async with Producer(counting.url, max_batch_size=max_batch_size) as producer:
        return await producer.send(
            counting.changelog,
            PARTITIONS,
            [(k.encode(), b"%d" % v) for k, v in values.items()],
        )
