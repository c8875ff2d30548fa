"""Serdes: bytes <-> Python values for keys and values.

A null (None) key or value stays None in both directions: Kafka uses a null value
as a tombstone and a null key for "no key", so no serde may invent one.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import SerdeError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@runtime_checkable
class Serde(Protocol[T]):
    """Turns values of one type into bytes and back; raise on bad input.

    Serdes may also have `as_stored(value)`: the value as deserializing its bytes
    would give it back, or a SerdeError. A table calls it at assignment, so that a
    wrong value fails at the line that assigned it, and so that what an agent reads
    back in the same process is what it reads after a restart.
    """

    def serialize(self, value: T | None) -> bytes | None: ...

    def deserialize(self, data: bytes | None) -> T | None: ...


def bytes_reader(serde: Serde[Any]) -> Callable[[bytes], Any]:
    """The serde's deserializer for bytes that are not None: a batch's decode checks
    for None itself, and a built-in serde's `from_bytes` skips a Python frame per
    record (`deserialize` is a wrapper adding that check)."""
    reader: Callable[[bytes], Any] = getattr(serde, "from_bytes", serde.deserialize)
    return reader


def _expected(name: str, value: Any) -> SerdeError:
    return SerdeError(f"expected {name}, got {type(value).__name__}")


class BytesSerde:
    def serialize(self, value: bytes | None) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        raise _expected("bytes", value)

    def deserialize(self, data: bytes | None) -> bytes | None:
        return data

    def as_stored(self, value: Any) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        raise _expected("bytes", value)


class StrSerde:
    """UTF-8 text, byte-compatible with Kafka's StringSerializer."""

    def serialize(self, value: str | None) -> bytes | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _expected("str", value)
        return value.encode()

    def deserialize(self, data: bytes | None) -> str | None:
        return None if data is None else data.decode()

    from_bytes = staticmethod(bytes.decode)

    def as_stored(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        raise _expected("str", value)


class IntSerde:
    """Decimal text (also valid JSON), so any tool can read it and ints are unbounded."""

    def serialize(self, value: int | None) -> bytes | None:
        if value.__class__ is int:
            return b"%d" % value
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise _expected("int", value)
        return b"%d" % value

    def deserialize(self, data: bytes | None) -> int | None:
        return None if data is None else int(data)

    def as_stored(self, value: Any) -> int:
        if type(value) is int:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        raise _expected("int", value)


class FloatSerde:
    """Shortest round-tripping decimal text (also valid JSON)."""

    def serialize(self, value: float | None) -> bytes | None:
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _expected("float", value)
        return repr(float(value)).encode()

    def deserialize(self, data: bytes | None) -> float | None:
        return None if data is None else float(data)

    def as_stored(self, value: Any) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _expected("float", value)


class JsonSerde:
    """Plain JSON of any JSON-able value (dicts, lists, numbers, strings, models)."""

    def serialize(self, value: Any) -> bytes | None:
        if value is None:
            return None
        return pydantic_core.to_json(value)

    def deserialize(self, data: bytes | None) -> Any:
        return None if data is None else pydantic_core.from_json(data)

    from_bytes = staticmethod(pydantic_core.from_json)

    def as_stored(self, value: Any) -> Any:
        """What JSON gives back: a tuple or set reads as a list, a datetime as a string,
        a model as a dict; a value JSON cannot hold (a function, say) is refused."""
        if type(value) in _JSON_AS_IS:
            return value
        try:
            return pydantic_core.from_json(pydantic_core.to_json(value))
        except pydantic_core.PydanticSerializationError as exc:
            raise SerdeError(
                f"a {type(value).__name__} cannot be stored as JSON ({exc}); store "
                "JSON-able values, or declare value_type= with a type pydantic can serialize"
            ) from None


class ModelSerde(Generic[M]):
    """A pydantic model as JSON; validation errors are bad input, not crashes."""

    def __init__(self, model: type[M]) -> None:
        self.model = model
        # pydantic-core's own entry points: model_validate_json and model_dump_json
        # add a Python frame (and a str round trip) per record around these.
        self._validate_json = model.__pydantic_validator__.validate_json
        self._to_json = model.__pydantic_serializer__.to_json
        self.from_bytes = self._validate_json

    def serialize(self, value: M | dict[str, Any] | None) -> bytes | None:
        if value.__class__ is self.model:
            return self._to_json(value)
        if value is None:
            return None
        if isinstance(value, dict):
            # A plain dict is accepted if it validates: it is what JSON producers send.
            value = self.model.model_validate(value)
        if not isinstance(value, self.model):
            raise _expected(self.model.__name__, value)
        return self._to_json(value)

    def as_stored(self, value: Any) -> M:
        if isinstance(value, self.model):
            return value
        if isinstance(value, dict):
            try:
                return self.model.model_validate(value)
            except ValidationError as exc:
                raise SerdeError(f"not a valid {self.model.__name__}: {problems(exc)}") from None
        raise _expected(self.model.__name__, value)

    def deserialize(self, data: bytes | None) -> M | None:
        return None if data is None else self._validate_json(data)


class TypeAdapterSerde(Generic[T]):
    """JSON for any other type pydantic understands (dataclasses, list[int], unions)."""

    def __init__(self, tp: Any) -> None:
        self.adapter: TypeAdapter[T] = TypeAdapter(tp)
        plain = isinstance(tp, type) and not hasattr(tp, "__origin__")
        self._name = tp.__name__ if plain else str(tp)

    def serialize(self, value: T | None) -> bytes | None:
        if value is None:
            return None
        return self.adapter.dump_json(value)

    def deserialize(self, data: bytes | None) -> T | None:
        return None if data is None else self.adapter.validate_json(data)

    def as_stored(self, value: Any) -> T:
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            raise SerdeError(f"expected {self._name}: {problems(exc)}") from None


def problems(exc: ValidationError, whole: str = "value") -> str:
    """pydantic's multi-line report as one line: `field: message; ...`."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or whole}: {e['msg']}" for e in exc.errors()
    )


class PythonSerde:
    """For internal topics and stores whose type was not declared: any picklable value.

    Text is plain UTF-8, byte-compatible with Kafka's StringSerializer, so a
    repartitioned string key lands on the same partition as in a string-keyed
    topic (joins need that); anything else is a pickle, whose first byte (0x80)
    can never start UTF-8 text. Only this app reads these bytes back.
    """

    def serialize(self, value: Any) -> bytes | None:
        if value is None:
            return None
        if type(value) is str:
            return value.encode()
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def deserialize(self, data: bytes | None) -> Any:
        if data is None:
            return None
        if data[:1] == b"\x80":
            return pickle.loads(data)
        return data.decode()


# Values JSON gives back unchanged (a float may not be: NaN and infinities are null).
_JSON_AS_IS = frozenset({str, int, bool})

_BY_TYPE: dict[Any, Serde[Any]] = {
    bytes: BytesSerde(),
    str: StrSerde(),
    int: IntSerde(),
    float: FloatSerde(),
    Any: JsonSerde(),
    None: JsonSerde(),
    dict: JsonSerde(),
    list: JsonSerde(),
    object: JsonSerde(),
}


def serde_for(tp: Any) -> Serde[Any]:
    """The serde for a declared key or value type, or the serde itself if one is given."""
    if isinstance(tp, Serde) and not isinstance(tp, type):
        return tp
    if tp in _BY_TYPE:
        return _BY_TYPE[tp]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return ModelSerde(tp)
    return TypeAdapterSerde(tp)
