"""Encoding of actor state and replies: msgpack, with dataclass state supported.

State and replies must survive a trip through the store or, later, across nodes, so the runtime
encodes them even in process: a value that cannot be encoded is refused at the turn that produced
it, with nothing committed, instead of failing on another node later.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from kelpie.errors import CorruptData, NotEncodable, shorten

__all__ = ["decode", "decode_state", "encode", "encode_state"]


def encode(value: object, *, what: str) -> bytes:
    """msgpack bytes of ``value`` (None, bool, int, float, str, bytes, lists, str-keyed dicts).

    Raises:
        NotEncodable: ``value`` holds something msgpack cannot represent.
    """
    try:
        return msgpack.packb(value, use_bin_type=True, strict_types=False)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as error:
        raise NotEncodable(
            f"{what} cannot be encoded ({error}): {shorten(value)}; use None, bool, int, float, str, "
            "bytes, lists and dicts with str keys"
        ) from None


def decode(data: bytes, *, what: str) -> Any:
    """The value encoded in ``data``.

    Raises:
        CorruptData: ``data`` is not valid msgpack.
    """
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as error:
        raise CorruptData(f"{what} in the store is not valid msgpack: {error}") from None


def encode_state(state: object, state_type: type[Any] | None) -> bytes:
    """Encode actor state; a dataclass state is stored as the dict of its fields."""
    if state_type is not None and dataclasses.is_dataclass(state_type):
        if not isinstance(state, state_type):
            raise NotEncodable(
                f"actor state must be a {state_type.__name__}, got {type(state).__name__} {shorten(state)}"
            )
        return encode(dataclasses.asdict(state), what="actor state")
    return encode(state, what="actor state")


def decode_state(data: bytes, state_type: type[Any] | None) -> Any:
    value = decode(data, what="actor state")
    if state_type is not None and dataclasses.is_dataclass(state_type):
        if not isinstance(value, dict):
            raise CorruptData(
                f"actor state should be a dict of {state_type.__name__} fields, got {shorten(value)}"
            )
        return state_type(**value)
    return value
