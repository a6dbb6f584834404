"""Subspaces: a key prefix that every key of one layout starts with, in FoundationDB's shape.

A subspace is a raw byte prefix followed by a packed tuple. Keys inside it are the prefix followed
by more packed elements, so one subspace's keys form one contiguous range and never mix with a
sibling's: ``Subspace(("agents",))`` and ``Subspace(("agents2",))`` do not overlap, because a
packed string ends with its 0x00 terminator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kelpie.errors import InvalidKey, InvalidTuple, shorten
from kelpie.storage.tuple import TupleItem, pack, range_of, unpack

__all__ = ["Subspace"]


@dataclass(frozen=True)
class Subspace:
    """The keys that start with ``raw_prefix + pack(prefix_items)``.

    Two subspaces are equal when their keys are equal, however they were built.

    Raises:
        InvalidTuple: ``prefix_items`` cannot be packed.
        InvalidKey: ``raw_prefix`` is not bytes.
    """

    prefix_items: tuple[TupleItem, ...] = field(default=(), compare=False)
    raw_prefix: bytes = field(default=b"", compare=False)
    key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.raw_prefix, bytes):
            raise InvalidKey(self.raw_prefix)
        object.__setattr__(self, "key", pack(self.prefix_items, self.raw_prefix))

    def pack(self, items: tuple[TupleItem, ...] = ()) -> bytes:
        """The key for ``items`` inside this subspace.

        Raises:
            InvalidTuple: ``items`` cannot be packed.
        """
        return pack(items, self.key)

    def unpack(self, key: bytes) -> tuple[TupleItem, ...]:
        """The items of ``key`` after this subspace's prefix.

        Raises:
            InvalidTuple: ``key`` is not in this subspace, or what follows the prefix is not a
                packed tuple.
        """
        if not self.contains(key):
            raise InvalidTuple(f"key {shorten(key)} is not in the subspace with prefix {shorten(self.key)}")
        return unpack(key, len(self.key))

    def range(self, items: tuple[TupleItem, ...] = ()) -> tuple[bytes, bytes]:
        """Begin (inclusive) and end (exclusive) keys of every key that extends ``self.pack(items)``.

        With no items this is every key of the subspace except ``self.key`` itself.

        Raises:
            InvalidTuple: ``items`` cannot be packed.
        """
        return range_of(items, self.key)

    def contains(self, key: bytes) -> bool:
        """Whether ``key`` starts with this subspace's prefix (``self.key`` itself included)."""
        return isinstance(key, bytes) and key.startswith(self.key)

    def subspace(self, items: tuple[TupleItem, ...]) -> Subspace:
        """The subspace of keys that start with ``self.pack(items)``.

        Raises:
            InvalidTuple: ``items`` cannot be packed.
        """
        if not isinstance(items, tuple):
            raise InvalidTuple(
                f"subspace expects a tuple, got {type(items).__name__} {shorten(items)}; "
                "use subspace[item] for one element"
            )
        return Subspace(self.prefix_items + items, self.raw_prefix)

    def __getitem__(self, item: TupleItem) -> Subspace:
        """The subspace for one more element: ``space["agents"]`` is ``space.subspace(("agents",))``.

        Raises:
            InvalidTuple: ``item`` cannot be packed.
        """
        return Subspace((*self.prefix_items, item), self.raw_prefix)
