"""Validation of keys and values against FoundationDB's limits, shared by every backend."""

from __future__ import annotations

from kelpie import limits
from kelpie.errors import InvalidArgument, InvalidKey, KeyTooLarge, ValueTooLarge, shorten

__all__ = ["check_key", "check_value", "key_after"]


def check_key(key: object) -> bytes:
    """``key`` itself, once it is known to be bytes within the key limit.

    Raises:
        InvalidKey: ``key`` is not ``bytes``.
        KeyTooLarge: ``key`` is longer than :data:`kelpie.limits.KEY_BYTES_LIMIT`.
    """
    if type(key) is not bytes:
        raise InvalidKey(key)
    if len(key) > limits.KEY_BYTES_LIMIT:
        raise KeyTooLarge(key, limits.KEY_BYTES_LIMIT)
    return key


def check_value(key: bytes, value: object) -> bytes:
    """``value`` itself, once it is known to be bytes within the value limit.

    Raises:
        InvalidArgument: ``value`` is not ``bytes``.
        ValueTooLarge: ``value`` is longer than :data:`kelpie.limits.VALUE_BYTES_LIMIT`.
    """
    if type(value) is not bytes:
        raise InvalidArgument(
            f"value for key {shorten(key)} must be bytes, got {type(value).__name__} {shorten(value)}"
        )
    if len(value) > limits.VALUE_BYTES_LIMIT:
        raise ValueTooLarge(key, len(value), limits.VALUE_BYTES_LIMIT)
    return value


def key_after(key: bytes) -> bytes:
    """The first key that sorts after ``key``: ``[key, key_after(key))`` holds ``key`` alone."""
    return key + b"\x00"
