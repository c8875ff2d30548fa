"""Word count: sentences are split into words, words are re-keyed and counted.

Re-keying goes through the `words` topic: a word's records all land on the
partition Kafka's partitioner picks for it, so one task counts each word. Run

    streamkit worker examples.word_count:app --stop-when-idle 2
"""

import random

import streamkit as sk

app = sk.App("word-count")
sentences = app.topic("sentences", key_type=str, value_type=str, partitions=2)
words = app.topic("words", key_type=str, value_type=int, partitions=4)
counts_out = app.topic("word-counts", key_type=str, value_type=int, partitions=4)
totals = app.table("word-totals", default=int)

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "a stream is a table in motion and a table is a stream at rest",
    "the log is the truth and the table is a cache of the log",
]
played = 0


@app.timer(0.2)
async def play_sentences() -> None:
    global played
    if played < 30:
        played += 1
        await app.send(sentences, key=str(played), value=random.choice(TEXT))


@app.agent(sentences, sink=words)
async def split(stream):
    async for sentence in stream:
        for word in sentence.split():
            yield word, 1  # the new key picks the partition, and so the task


@app.agent(words, sink=counts_out)
async def count(stream):
    async for word, n in stream.items():
        totals[word] += n
        yield word, totals[word]


@app.agent(counts_out)
async def show(stream):
    async for word, total in stream.items():
        print(f"{word:>8} {total}", flush=True)
