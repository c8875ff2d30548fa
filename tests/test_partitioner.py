import pytest

from streamkit.partitioner import partition_for

# Kafka's own vectors (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
# testMurmur2), as signed Java ints.
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "java_hash"), KAFKA_MURMUR2.items())
@pytest.mark.parametrize("partitions", [1, 3, 4, 12, 100])
def test_partition_matches_javas_default_partitioner(
    key: bytes, java_hash: int, partitions: int
) -> None:
    # BuiltInPartitioner.partitionForKey: toPositive(murmur2(key)) % numPartitions
    assert partition_for(key, partitions) == (java_hash & 0x7FFFFFFF) % partitions


def test_known_partitions() -> None:
    assert partition_for(b"foobar", 4) == 2
    assert partition_for(b"21", 10) == 0
    assert partition_for(b"abc", 7) == 479470107 % 7


def test_murmur2_is_the_one_kafka_clients_use() -> None:
    # Every length of tail (0 to 3 bytes after the last whole word) and empty keys,
    # against the transcription of Kafka's Utils.murmur2 that aiokafka ships.
    import random

    from aiokafka.partitioner import murmur2 as reference

    from streamkit.partitioner import murmur2

    rng = random.Random(5)
    keys = [b"", *(rng.randbytes(n) for n in range(1, 40) for _ in range(20))]
    assert [murmur2(k) for k in keys] == [reference(k) for k in keys]
    assert {murmur2(k) for k in KAFKA_MURMUR2} == {h & 0xFFFFFFFF for h in KAFKA_MURMUR2.values()}
