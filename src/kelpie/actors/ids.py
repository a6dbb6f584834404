"""Actor ids: ``namespace/type/key``, an actor's name forever."""

from __future__ import annotations

from typing import NamedTuple

from kelpie import limits
from kelpie.errors import InvalidActorId, shorten

__all__ = ["ActorId"]


def _check_part(name: str, value: object, *, allow_slash: bool) -> str:
    if type(value) is not str or not value:
        raise InvalidActorId(f"actor id {name} must be a non-empty string, got {shorten(value)}")
    if len(value) > limits.ACTOR_ID_PART_CHARS_LIMIT:
        raise InvalidActorId(
            f"actor id {name} of {len(value)} characters exceeds the limit of "
            f"{limits.ACTOR_ID_PART_CHARS_LIMIT}: {shorten(value)}"
        )
    if not allow_slash and "/" in value:
        raise InvalidActorId(f"actor id {name} may not contain '/': {shorten(value)}")
    if any(ord(character) < 32 for character in value):
        raise InvalidActorId(f"actor id {name} may not contain control characters: {shorten(value)}")
    return value


class ActorId(NamedTuple):
    """``ActorId("default", "counter", "c-1")``; printed and parsed as ``default/counter/c-1``.

    A NamedTuple, so hashing (on every request) is a tuple hash. Build checked ids with
    :meth:`of` or :meth:`parse`; the plain constructor does not validate.
    """

    namespace: str
    type: str
    key: str

    @classmethod
    def of(cls, namespace: object, type: object, key: object) -> ActorId:
        """A validated id.

        Raises:
            InvalidActorId: a part is empty, not a string, too long, or (namespace, type) has '/'.
        """
        return cls(
            _check_part("namespace", namespace, allow_slash=False),
            _check_part("type", type, allow_slash=False),
            _check_part("key", key, allow_slash=True),
        )

    @classmethod
    def parse(cls, text: object) -> ActorId:
        """``namespace/type/key`` (the key may itself contain '/').

        Raises:
            InvalidActorId: ``text`` is not of that form.
        """
        if type(text) is not str:
            raise InvalidActorId(f"actor id must be a string 'namespace/type/key', got {shorten(text)}")
        parts = text.split("/", 2)
        if len(parts) != 3:
            raise InvalidActorId(f"actor id must look like 'namespace/type/key', got {shorten(text)}")
        return cls.of(*parts)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.type}/{self.key}"
