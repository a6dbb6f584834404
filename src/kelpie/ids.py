"""Letta-style prefixed ids: ``agent-<uuid4>``, ``block-<uuid4>``, ``message-<uuid4>``..."""

from __future__ import annotations

import uuid
from typing import Final

from kelpie.env import Env
from kelpie.errors import InvalidArgument, shorten

__all__ = ["ID_PREFIXES", "new_id", "parse_id"]

ID_PREFIXES: Final = frozenset(
    {"agent", "block", "tool", "message", "passage", "run", "source", "file", "sandbox", "step"}
)


def new_id(env: Env, prefix: str) -> str:
    """A fresh id such as ``agent-2b6f...``, drawn from the environment's randomness.

    Raises:
        InvalidArgument: ``prefix`` is not one of :data:`ID_PREFIXES`.
    """
    if prefix not in ID_PREFIXES:
        raise InvalidArgument(f"unknown id prefix {shorten(prefix)}; expected one of {sorted(ID_PREFIXES)}")
    return f"{prefix}-{env.ids.uuid4()}"


def parse_id(value: object, prefix: str) -> uuid.UUID:
    """The UUID inside a prefixed id, checking the prefix.

    Raises:
        InvalidArgument: ``value`` is not a string of the form ``<prefix>-<uuid>``.
    """
    expected = f"a string like '{prefix}-123e4567-e89b-42d3-a456-426614174000'"
    if not isinstance(value, str) or not value.startswith(prefix + "-"):
        raise InvalidArgument(f"invalid {prefix} id {shorten(value)}: expected {expected}")
    try:
        return uuid.UUID(value[len(prefix) + 1 :])
    except ValueError:
        raise InvalidArgument(f"invalid {prefix} id {shorten(value)}: expected {expected}") from None
