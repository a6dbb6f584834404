"""Subspaces: prefixes, packing inside them, ranges, containment, nesting, equality."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kelpie.errors import InvalidKey, InvalidTuple
from kelpie.storage.subspace import Subspace
from kelpie.storage.tuple import TupleItem, pack

names = st.text(max_size=8)
tuples_of_names = st.lists(st.one_of(names, st.integers(), st.none()), max_size=3).map(tuple)


def test_key_is_raw_prefix_then_packed_items() -> None:
    assert Subspace().key == b""
    assert Subspace(("agents", 7)).key == b"\x02agents\x00\x15\x07"
    assert Subspace(("agents",), b"\xfe").key == b"\xfe\x02agents\x00"
    assert Subspace(raw_prefix=b"raw").key == b"raw"


def test_pack_and_unpack_inside_the_subspace() -> None:
    space = Subspace(("agents",), b"\xfe")
    key = space.pack(("agent-1", "blocks", 3))
    assert key == b"\xfe\x02agents\x00" + pack(("agent-1", "blocks", 3))
    assert space.unpack(key) == ("agent-1", "blocks", 3)
    assert space.pack() == space.key
    assert space.unpack(space.key) == ()


@given(tuples_of_names, tuples_of_names, st.binary(max_size=4))
def test_round_trip(prefix_items: tuple[TupleItem, ...], items: tuple[TupleItem, ...], raw: bytes) -> None:
    space = Subspace(prefix_items, raw)
    key = space.pack(items)
    assert space.contains(key)
    assert space.unpack(key) == items


def test_unpack_rejects_keys_outside_the_subspace() -> None:
    space = Subspace(("agents",))
    with pytest.raises(InvalidTuple, match="not in the subspace"):
        space.unpack(pack(("blocks", 1)))
    with pytest.raises(InvalidTuple, match="not in the subspace"):
        space.unpack(b"\x02agent")  # a prefix of the subspace's key is not inside it
    with pytest.raises(InvalidTuple, match="not in the subspace"):
        space.unpack("text")  # type: ignore[arg-type]


def test_unpack_rejects_malformed_tails() -> None:
    space = Subspace(("agents",))
    with pytest.raises(InvalidTuple, match="offset 8: 0x42"):
        space.unpack(space.key + b"\x42")


def test_contains() -> None:
    space = Subspace(("a",))
    assert space.contains(space.key)
    assert space.contains(space.pack((1, 2)))
    assert not space.contains(Subspace(("ab",)).key)
    assert not space.contains(Subspace(("b",)).pack((1,)))
    assert not space.contains(b"")
    assert Subspace().contains(b"anything")


def test_range_covers_children_and_excludes_siblings() -> None:
    space = Subspace(("a",), b"p")
    begin, end = space.range()
    assert (begin, end) == (b"p\x02a\x00\x00", b"p\x02a\x00\xff")
    assert begin <= space.pack((None,)) < end
    assert begin <= space.pack((b"\xff" * 10,)) < end
    assert begin <= space.pack(("z", 1)) < end
    for outside in (space.key, Subspace(("ab",), b"p").key, Subspace(("b",), b"p").key, b"p\x02a"):
        assert not begin <= outside < end


def test_range_of_items() -> None:
    space = Subspace(("a",))
    begin, end = space.range(("agent-1",))
    assert begin <= space.pack(("agent-1", "x")) < end
    assert not begin <= space.pack(("agent-2", "x")) < end
    assert not begin <= space.pack(("agent-1",)) < end


@given(tuples_of_names, tuples_of_names, tuples_of_names)
def test_nesting_equals_flat_construction(
    first: tuple[TupleItem, ...], second: tuple[TupleItem, ...], items: tuple[TupleItem, ...]
) -> None:
    nested = Subspace(first, b"r").subspace(second)
    flat = Subspace(first + second, b"r")
    assert nested == flat
    assert (nested.prefix_items, nested.raw_prefix) == (first + second, b"r")
    assert hash(nested) == hash(flat)
    assert nested.key == flat.key
    assert nested.pack(items) == Subspace(first, b"r").pack(second + items)


def test_getitem_nests_one_element() -> None:
    root = Subspace(("app",))
    assert root["agents"] == root.subspace(("agents",))
    assert root["agents"][7].key == pack(("app", "agents", 7))
    assert root[("pair", 1)].key == pack(("app", ("pair", 1)))  # a tuple element nests as a tuple


def test_equality_is_by_key() -> None:
    assert Subspace(("a",)) == Subspace((), pack(("a",)))
    assert Subspace(("a",)) != Subspace(("b",))
    assert len({Subspace(("a",)), Subspace((), pack(("a",))), Subspace(("b",))}) == 2


def test_is_frozen() -> None:
    space = Subspace(("a",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        space.key = b"other"  # type: ignore[misc]


def test_rejects_bad_prefixes() -> None:
    with pytest.raises(InvalidKey, match="str"):
        Subspace((), "raw")  # type: ignore[arg-type]
    with pytest.raises(InvalidTuple, match="object"):
        Subspace((object(),))  # type: ignore[arg-type]
    with pytest.raises(InvalidTuple, match="expects a tuple"):
        Subspace(("a",)).subspace("b")  # type: ignore[arg-type]
    with pytest.raises(InvalidTuple, match="set"):
        Subspace(("a",))[{1}]  # type: ignore[index]
