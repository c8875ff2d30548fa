from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from streamkit.errors import SerdeError
from streamkit.serde import (
    BytesSerde,
    FloatSerde,
    IntSerde,
    JsonSerde,
    ModelSerde,
    StrSerde,
    TypeAdapterSerde,
    serde_for,
)


class Click(BaseModel):
    user: str
    page: str


@dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("tp", "value", "raw"),
    [
        (str, "ada", b"ada"),
        (str, "日本", "日本".encode()),
        (bytes, b"\x00\xff", b"\x00\xff"),
        (int, -42, b"-42"),
        (int, 2**80, str(2**80).encode()),
        (float, 1.5, b"1.5"),
        (Any, {"a": [1, 2]}, b'{"a":[1,2]}'),
        (Click, Click(user="u", page="/"), b'{"user":"u","page":"/"}'),
        (Point, Point(1, 2), b'{"x":1,"y":2}'),
    ],
)
def test_round_trip(tp: Any, value: Any, raw: bytes) -> None:
    serde = serde_for(tp)
    assert serde.serialize(value) == raw
    assert serde.deserialize(raw) == value


def test_types_pick_their_serde() -> None:
    assert isinstance(serde_for(str), StrSerde)
    assert isinstance(serde_for(bytes), BytesSerde)
    assert isinstance(serde_for(int), IntSerde)
    assert isinstance(serde_for(float), FloatSerde)
    assert isinstance(serde_for(Any), JsonSerde)
    assert isinstance(serde_for(Click), ModelSerde)
    assert isinstance(serde_for(list[int]), TypeAdapterSerde)
    custom = StrSerde()
    assert serde_for(custom) is custom


@pytest.mark.parametrize("tp", [str, bytes, int, float, Any, Click, Point])
def test_null_stays_null(tp: Any) -> None:
    serde = serde_for(tp)
    assert serde.serialize(None) is None
    assert serde.deserialize(None) is None


def test_bad_input_raises() -> None:
    with pytest.raises(ValidationError):
        serde_for(Click).deserialize(b'{"user": 1}')
    with pytest.raises(ValueError):
        serde_for(Click).deserialize(b"{not json")
    with pytest.raises(ValueError):
        serde_for(int).deserialize(b"seven")
    with pytest.raises(UnicodeDecodeError):
        serde_for(str).deserialize(b"\xff\xfe")


def test_wrong_type_on_serialize_names_the_types() -> None:
    with pytest.raises(SerdeError, match="expected str, got int"):
        serde_for(str).serialize(3)
    with pytest.raises(SerdeError, match="expected Click, got list"):
        serde_for(Click).serialize(["u"])
    with pytest.raises(ValidationError):
        serde_for(Click).serialize({"user": "u"})  # a dict must validate
    assert serde_for(Click).serialize({"user": "u", "page": "/"}) == b'{"user":"u","page":"/"}'
    with pytest.raises(SerdeError, match="expected int, got bool"):
        serde_for(int).serialize(True)
