"""A DSL count through a repartition topic, for the multi-process DSL tests.

Names come from the environment: SKT_APP_ID (the consumer group and the prefix of
`<app id>-by-user-repartition` and `<app id>-counts-changelog`), SKT_INPUT and
SKT_OUTPUT (4 partitions each), SKT_WORKER (the worker's name, set by
tests/cluster.py).

Input value `i` (decimal text) belongs to user `user-<i % 41>`, a key unrelated to
the input key, so records change partitions on the way to the count. Both
sub-topologies stamp what they pass on with where it came from, so that a test can
tell which worker processed which record up to where:

- sub-topology 0 (input -> repartition topic): value `<user> <i> <input partition>
  <input offset> <worker>`;
- sub-topology 1 (repartition topic -> count -> output): value `<count>
  <repartition partition> <repartition offset> <worker>`.
"""

from __future__ import annotations

import os

import streamkit as sk

WORKER = os.environ.get("SKT_WORKER", "?")
USERS = 41

app = sk.App(os.environ["SKT_APP_ID"])
source = app.topic(os.environ["SKT_INPUT"], key_type=str, value_type=str, partitions=4)
sink = app.topic(os.environ["SKT_OUTPUT"], key_type=str, value_type=str, partitions=4)


class Stamp(sk.Processor):
    """Appends where the record in hand came from and which worker saw it."""

    def process(self, record: sk.Record) -> None:
        c = self.context
        self.context.forward(record.with_value(f"{record.value} {c.partition} {c.offset} {WORKER}"))


(
    app.stream(source)
    .map_values(lambda i: f"user-{int(i) % USERS} {i}")
    .process(Stamp)
    .group_by(lambda _key, stamped: stamped.split()[0], name="by-user", key_type=str)
    .count(name="counts")
    .to_stream()
    .process(Stamp)
    .to(sink)
)
