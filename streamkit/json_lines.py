"""Records typed on a command line or in JSON lines, for `streamkit send`.

Text is read the way a person means it for the topic at hand: JSON where JSON
fits the topic's type (`5` for an int value, `{"user": "ada"}` for a model), the
text itself otherwise (`ada` for a string key). Every record is checked against
the topic's serdes before any is sent, so a bad line sends nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .serde import Serde
from .topic import Topic

_NO_JSON: Any = object()


@dataclass(frozen=True)
class TextRecord:
    key: Any
    value: Any
    timestamp_ms: int | None = None


def typed(text: str, serde: Serde[Any]) -> Any:
    """`text` as the serde takes it: its JSON reading if that serializes, else the text."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = _NO_JSON
    for candidate in (parsed, text):
        if candidate is _NO_JSON:
            continue
        try:
            serde.serialize(candidate)
        except Exception:
            continue
        return candidate
    return text  # neither fits: the check that follows says why


def read_lines(lines: Iterable[str], topic: Topic, key: str | None) -> list[TextRecord]:
    """One record per non-blank line: `{"key": ..., "value": ...}` (and optionally
    `"timestamp_ms"`), or, when `key` is given, the value alone (JSON or text)."""
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if key is not None:
            record = TextRecord(
                typed(key, topic.key_serde), typed(line.rstrip("\n"), topic.value_serde)
            )
        else:
            try:
                fields = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"line {number}: not JSON ({exc}): {line.strip()[:80]}") from None
            if not isinstance(fields, dict) or "value" not in fields:
                raise ConfigError(
                    f'line {number}: expected {{"key": ..., "value": ...}} (or pass --key '
                    f"and give values alone), got {line.strip()[:80]}"
                )
            unknown = set(fields) - {"key", "value", "timestamp_ms"}
            if unknown:
                raise ConfigError(f"line {number}: unknown fields {', '.join(sorted(unknown))}")
            record = TextRecord(fields.get("key"), fields["value"], fields.get("timestamp_ms"))
        check(record, topic, f"line {number}")
        records.append(record)
    return records


def check(record: TextRecord, topic: Topic, where: str) -> None:
    """Refuse, naming `where`, a record the topic's serdes cannot write."""
    for part, value, serde in (
        ("key", record.key, topic.key_serde),
        ("value", record.value, topic.value_serde),
    ):
        try:
            serde.serialize(value)
        except Exception as exc:
            raise ConfigError(
                f"{where}: {part} {json.dumps(value, default=repr)[:80]} does not fit topic "
                f"{topic.name!r}: {' '.join(str(exc).split())[:300]}"
            ) from None
