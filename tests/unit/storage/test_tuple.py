"""The tuple encoding: FoundationDB's vectors, round trips, order preservation, canonical form, errors."""

from __future__ import annotations

import decimal
import enum
import math
import struct
import uuid
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from kelpie.errors import InvalidArgument, InvalidTuple
from kelpie.storage.tuple import TUPLE_NESTING_DEPTH_LIMIT, TupleItem, pack, range_of, strinc, unpack

BIG_INT_LIMIT = 1 << (8 * 255)  # magnitudes must fit in 255 bytes

# --- strategies ---------------------------------------------------------------------------------

# Ints near every length boundary, plus huge ones, plus whatever Hypothesis likes.
boundary_ints = st.sampled_from(
    [
        sign * ((1 << (8 * n)) + delta)
        for n in (0, 1, 2, 7, 8, 9, 16, 254)
        for delta in (-1, 0, 1)
        for sign in (1, -1)
    ]
    + [BIG_INT_LIMIT - 1, -(BIG_INT_LIMIT - 1)]
)
ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(BIG_INT_LIMIT - 1), max_value=BIG_INT_LIMIT - 1),
    boundary_ints,
)
floats = st.floats(allow_nan=False)  # includes -0.0, ±inf, subnormals
# Text and bytes biased towards 0x00, 0xff and escape-like sequences.
texts = st.one_of(st.text(), st.text(alphabet=st.sampled_from("\x00\x01a\xff\u00ff\u20ac\U0001f600")))
binaries = st.one_of(st.binary(), st.lists(st.sampled_from([0x00, 0x01, 0xFE, 0xFF])).map(bytes))

scalars: st.SearchStrategy[TupleItem] = st.one_of(
    st.none(), st.booleans(), ints, st.floats(), texts, binaries, st.uuids()
)
any_items: st.SearchStrategy[TupleItem] = st.recursive(
    scalars, lambda children: st.lists(children, max_size=4).map(tuple), max_leaves=20
)


def key_of(item: Any) -> bytes:
    return pack((item,))


def assert_order_preserved(values: list[Any], python_key: Any = None) -> None:
    by_python = sorted(values, key=python_key)
    by_bytes = sorted(values, key=key_of)
    assert [key_of(value) for value in by_python] == [key_of(value) for value in by_bytes]


# --- known vectors from FoundationDB's tuple-layer specification --------------------------------


@pytest.mark.parametrize(
    ("items", "packed"),
    [
        ((None,), b"\x00"),
        ((b"foo\x00bar",), b"\x01foo\x00\xffbar\x00"),
        (("hello",), b"\x02hello\x00"),
        (("F\u00d4O\u0000bar",), b"\x02F\xc3\x94O\x00\xffbar\x00"),
        (((b"foo\x00bar", None, ()),), b"\x05\x01foo\x00\xffbar\x00\x00\xff\x05\x00\x00"),
        ((0,), b"\x14"),
        ((1,), b"\x15\x01"),
        ((-1,), b"\x13\xfe"),
        ((255,), b"\x15\xff"),
        ((256,), b"\x16\x01\x00"),
        ((-255,), b"\x13\x00"),
        ((-256,), b"\x12\xfe\xff"),
        ((5551212,), b"\x17\x54\xb4\x6c"),
        ((-5551212,), b"\x11\xabK\x93"),
        (((1 << 64) - 1,), b"\x1c" + b"\xff" * 8),
        ((-((1 << 64) - 1),), b"\x0c" + b"\x00" * 8),
        ((1 << 64,), b"\x1d\x09\x01" + b"\x00" * 8),
        ((-(1 << 64),), b"\x0b\xf6\xfe" + b"\xff" * 8),
        ((-42.0,), b"\x21\x3f\xba\xff\xff\xff\xff\xff\xff"),
        ((0.0,), b"\x21\x80" + b"\x00" * 7),
        ((-0.0,), b"\x21\x7f" + b"\xff" * 7),
        ((math.inf,), b"\x21\xff\xf0" + b"\x00" * 6),
        ((math.nan,), b"\x21\xff\xf8" + b"\x00" * 6),
        ((False,), b"\x26"),
        ((True,), b"\x27"),
        (
            (uuid.UUID(int=0x0123456789ABCDEF0123456789ABCDEF),),
            b"\x30" + bytes.fromhex("0123456789abcdef" * 2),
        ),
        (("a", 1, None), b"\x02a\x00\x15\x01\x00"),
        ((), b""),
        (((),), b"\x05\x00"),
        (((None,),), b"\x05\x00\xff\x00"),
    ],
)
def test_known_vectors(items: tuple[TupleItem, ...], packed: bytes) -> None:
    assert pack(items) == packed
    assert pack(unpack(packed)) == packed


def test_prefix_is_prepended_and_skipped() -> None:
    assert pack((1, "a"), b"\xfe\x01") == b"\xfe\x01\x15\x01\x02a\x00"
    assert unpack(b"\xfe\x01\x15\x01\x02a\x00", prefix_bytes=2) == (1, "a")
    assert unpack(b"\xfe\x01", prefix_bytes=2) == ()


def test_nested_tuples_concatenate() -> None:
    assert pack((1, 2)) == pack((1,)) + pack((2,))
    assert unpack(pack((("a", (None, b"x")), 3))) == (("a", (None, b"x")), 3)


# --- round trips --------------------------------------------------------------------------------


@given(st.lists(any_items, max_size=5).map(tuple))
def test_round_trip_keeps_values_and_types(items: tuple[TupleItem, ...]) -> None:
    # repr tells apart True/1, -0.0/0.0, bytes/str and shows nan, so it checks types as well.
    assert repr(unpack(pack(items))) == repr(items)


@given(st.lists(any_items, max_size=5).map(tuple), binaries)
def test_round_trip_with_prefix(items: tuple[TupleItem, ...], prefix: bytes) -> None:
    packed = pack(items, prefix)
    assert packed.startswith(prefix)
    assert repr(unpack(packed, len(prefix))) == repr(items)


def test_bool_is_not_an_int() -> None:
    assert pack((True,)) != pack((1,))
    assert unpack(pack((True, False, 1, 0))) == (True, False, 1, 0)
    assert [type(item) for item in unpack(pack((True, 1)))] == [bool, int]


def test_int_and_str_subclasses_pack_as_their_base() -> None:
    class Colour(enum.IntEnum):
        RED = 7

    class Name(enum.StrEnum):
        ALICE = "alice"

    assert pack((Colour.RED,)) == pack((7,))
    assert pack((Name.ALICE,)) == pack(("alice",))


def test_every_nan_packs_to_one_key_and_round_trips() -> None:
    negative_nan = struct.unpack(">d", bytes.fromhex("fff8000000000001"))[0]
    assert math.isnan(negative_nan)
    assert pack((negative_nan,)) == pack((math.nan,))
    (value,) = unpack(pack((math.nan,)))
    assert isinstance(value, float)
    assert math.isnan(value)


def test_negative_zero_keeps_its_sign() -> None:
    (value,) = unpack(pack((-0.0,)))
    assert isinstance(value, float)
    assert math.copysign(1.0, value) == -1.0


# --- order --------------------------------------------------------------------------------------


@given(st.lists(ints))
def test_int_order(values: list[int]) -> None:
    assert_order_preserved(values)


@given(ints, ints)
def test_int_order_pairwise(first: int, second: int) -> None:
    assert (first < second) == (key_of(first) < key_of(second))
    assert (first == second) == (key_of(first) == key_of(second))


@given(st.lists(floats))
@example([-math.inf, math.inf, -0.0, 0.0, 5e-324, -5e-324, -1.0, 1.0])
def test_float_order(values: list[float]) -> None:
    # -0.0 sorts just before 0.0.
    assert_order_preserved(values, python_key=lambda value: (value, math.copysign(1.0, value)))


@given(floats, floats)
def test_float_order_pairwise(first: float, second: float) -> None:
    assume(first != second)
    assert (first < second) == (key_of(first) < key_of(second))


def test_nan_sorts_after_infinity() -> None:
    assert key_of(math.inf) < key_of(math.nan)
    assert key_of(-0.0) < key_of(0.0)


@given(st.lists(texts))
def test_str_order(values: list[str]) -> None:
    assert_order_preserved(values)


@given(st.lists(binaries))
def test_bytes_order(values: list[bytes]) -> None:
    assert_order_preserved(values)


@given(st.lists(st.uuids()))
def test_uuid_order(values: list[uuid.UUID]) -> None:
    assert_order_preserved(values)


def test_bool_order() -> None:
    assert key_of(False) < key_of(True)


# ±0.0 are equal in Python but distinct in bytes, so -0.0 is mapped to 0.0 here.
@given(st.lists(st.tuples(texts, ints, binaries, floats.map(lambda x: x + 0.0), st.booleans(), st.uuids())))
def test_fixed_signature_tuple_order(rows: list[tuple[str, int, bytes, float, bool, uuid.UUID]]) -> None:
    by_python = sorted(rows)
    by_bytes = sorted(rows, key=pack)
    assert [pack(row) for row in by_python] == [pack(row) for row in by_bytes]


@given(st.lists(st.lists(ints, max_size=4).map(tuple)))
def test_variable_length_tuple_order(rows: list[tuple[int, ...]]) -> None:
    # A tuple sorts before every longer tuple it is a prefix of.
    assert [pack(row) for row in sorted(rows)] == sorted(pack(row) for row in rows)


@given(st.lists(st.lists(st.lists(texts, max_size=3).map(tuple), max_size=3).map(tuple)))
def test_nested_tuple_order(values: list[tuple[tuple[str, ...], ...]]) -> None:
    assert_order_preserved(values)


def test_nested_none_sorts_after_end_of_nested_tuple() -> None:
    assert key_of((1,)) < key_of((1, None)) < key_of((1, b""))


def test_type_order() -> None:
    # One value per type, in the documented order; the extreme value of each type is chosen
    # where it could tempt an interleaving with the next type.
    ordered: list[TupleItem] = [
        None,
        b"\xff" * 4,
        "\U0010ffff",
        ((1 << 2000),),
        -(BIG_INT_LIMIT - 1),
        BIG_INT_LIMIT - 1,
        -math.inf,
        math.nan,
        False,
        True,
        uuid.UUID(int=0),
    ]
    keys = [key_of(value) for value in ordered]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


# --- range_of and strinc ------------------------------------------------------------------------


@given(st.lists(ints, max_size=3).map(tuple), st.lists(any_items, min_size=1, max_size=3).map(tuple))
def test_range_of_holds_every_extension(items: tuple[int, ...], tail: tuple[TupleItem, ...]) -> None:
    begin, end = range_of(items)
    assert begin <= pack(items + tail) < end


def test_range_of_bounds_and_exclusions() -> None:
    assert range_of(("a",), b"p") == (b"p\x02a\x00\x00", b"p\x02a\x00\xff")
    begin, end = range_of(("a",))
    assert not begin <= pack(("a",)) < end  # the tuple itself is not in its range
    assert not begin <= pack(("ab",)) < end
    assert not begin <= pack(("b",)) < end
    assert begin <= pack(("a", None)) < end


@pytest.mark.parametrize(
    ("key", "following"),
    [(b"a", b"b"), (b"a\xff", b"b"), (b"a\xff\xff", b"b"), (b"\x00", b"\x01"), (b"ab\xfe", b"ab\xff")],
)
def test_strinc(key: bytes, following: bytes) -> None:
    assert strinc(key) == following


@given(st.binary(min_size=1), st.binary())
def test_strinc_is_after_every_extension(key: bytes, tail: bytes) -> None:
    assume(key.rstrip(b"\xff"))
    assert key + tail < strinc(key)
    assert key < strinc(key)


@pytest.mark.parametrize("key", [b"", b"\xff", b"\xff\xff\xff"])
def test_strinc_rejects_keys_with_no_successor(key: bytes) -> None:
    with pytest.raises(InvalidTuple, match="no key follows"):
        strinc(key)


# --- canonical form -----------------------------------------------------------------------------


@given(st.binary(max_size=40))
def test_unpack_of_arbitrary_bytes_is_canonical_or_invalid(data: bytes) -> None:
    try:
        items = unpack(data)
    except InvalidTuple:
        return
    assert pack(items) == data


@given(st.lists(any_items, min_size=1, max_size=4).map(tuple), st.data())
def test_corrupted_keys_are_canonical_or_invalid(items: tuple[TupleItem, ...], data: st.DataObject) -> None:
    packed = bytearray(pack(items))
    index = data.draw(st.integers(0, len(packed) - 1))
    action = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    if action == "flip":
        packed[index] = data.draw(st.integers(0, 255))
    elif action == "truncate":
        del packed[index:]
    else:
        packed.insert(index, data.draw(st.integers(0, 255)))
    try:
        decoded = unpack(bytes(packed))
    except InvalidTuple:
        return
    assert pack(decoded) == bytes(packed)


# --- errors -------------------------------------------------------------------------------------


class Opaque:
    def __repr__(self) -> str:
        return "<opaque thing>"


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ([1, 2], "list"),
        ({"a": 1}, "dict"),
        ({1}, "set"),
        (bytearray(b"x"), "bytearray"),
        (decimal.Decimal("1.5"), "Decimal"),
        (1j, "complex"),
        (Opaque(), "Opaque"),
    ],
)
def test_pack_rejects_unsupported_types(value: object, type_name: str) -> None:
    with pytest.raises(InvalidTuple) as raised:
        pack((1, value))  # type: ignore[arg-type]
    assert repr(value) in str(raised.value)
    assert type_name in str(raised.value)
    with pytest.raises(InvalidTuple, match=type_name):
        pack((("nested", value),))  # type: ignore[arg-type]


def test_invalid_tuple_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        pack((object(),))  # type: ignore[arg-type]


@pytest.mark.parametrize("items", ["abc", [1, 2], b"ab", None])
def test_pack_rejects_a_non_tuple(items: object) -> None:
    with pytest.raises(InvalidTuple, match="expects a tuple"):
        pack(items)  # type: ignore[arg-type]


def test_pack_rejects_a_non_bytes_prefix() -> None:
    with pytest.raises(InvalidTuple, match="prefix must be bytes"):
        pack((1,), "p")  # type: ignore[arg-type]


def test_pack_rejects_lone_surrogates() -> None:
    with pytest.raises(InvalidTuple, match="not valid Unicode"):
        pack(("a\ud800",))


def test_pack_rejects_ints_beyond_255_bytes() -> None:
    assert unpack(pack((BIG_INT_LIMIT - 1,))) == (BIG_INT_LIMIT - 1,)
    assert unpack(pack((-(BIG_INT_LIMIT - 1),))) == (-(BIG_INT_LIMIT - 1),)
    for value in (BIG_INT_LIMIT, -BIG_INT_LIMIT):
        with pytest.raises(InvalidTuple, match="256 bytes"):
            pack((value,))


def nest(depth: int) -> TupleItem:
    value: TupleItem = ()
    for _ in range(depth - 1):
        value = (value,)
    return value


def test_nesting_depth_limit() -> None:
    deepest = nest(TUPLE_NESTING_DEPTH_LIMIT)
    assert unpack(pack((deepest,))) == (deepest,)
    with pytest.raises(InvalidTuple, match="nest deeper"):
        pack((nest(TUPLE_NESTING_DEPTH_LIMIT + 1),))
    too_deep = b"\x05" * (TUPLE_NESTING_DEPTH_LIMIT + 1) + b"\x00" * (TUPLE_NESTING_DEPTH_LIMIT + 1)
    with pytest.raises(InvalidTuple, match="nest deeper"):
        unpack(too_deep)
    with pytest.raises(InvalidTuple):
        unpack(b"\x05" * 100_000)  # not a RecursionError


@pytest.mark.parametrize(
    ("data", "offset", "byte", "reason"),
    [
        (b"\x15", 0, "0x15", "truncated"),
        (b"\x15\x01\x17\x01\x02", 2, "0x17", "truncated"),
        (b"\x13", 0, "0x13", "truncated"),
        (b"\x1d", 0, "0x1d", "truncated"),
        (b"\x1d\x09" + b"\x01" * 8, 0, "0x1d", "truncated"),
        (b"\x0b\xf6" + b"\x01" * 8, 0, "0x0b", "truncated"),
        (b"\x21\x00\x00", 0, "0x21", "truncated"),
        (b"\x30" + b"\x00" * 15, 0, "0x30", "truncated"),
        (b"\x02abc", 0, "0x02", "no 0x00 terminator"),
        (b"\x14\x01ab\x00\xff", 1, "0x01", "no 0x00 terminator"),
        (b"\x05\x15\x01", 0, "0x05", "no 0x00 terminator"),
        (b"\x05\x05\x00", 0, "0x05", "no 0x00 terminator"),
        (b"\x42", 0, "0x42", "unknown"),
        (b"\x14\x20\x00\x00\x00\x00", 1, "0x20", "unknown"),  # single floats are not supported
        (b"\x33" + b"\x00" * 12, 0, "0x33", "unknown"),  # nor versionstamps
        (b"\x02a\x00\xff", 0, "0x02", "no 0x00 terminator"),  # 0x00 0xff is always an escape
        (b"\x14\xff", 1, "0xff", "unknown"),
        (b"\x15\x00", 0, "0x15", "non-canonical"),
        (b"\x16\x00\x01", 0, "0x16", "non-canonical"),
        (b"\x13\xff", 0, "0x13", "non-canonical"),
        (b"\x1d\x08" + b"\x01" * 8, 0, "0x1d", "non-canonical"),
        (b"\x1d\x09\x00" + b"\x01" * 8, 0, "0x1d", "non-canonical"),
        (b"\x0b\xf7" + b"\x00" * 8, 0, "0x0b", "non-canonical"),
        (b"\x0b\xf6\xff" + b"\x00" * 8, 0, "0x0b", "non-canonical"),
        (b"\x21\xff\xf8\x00\x00\x00\x00\x00\x01", 0, "0x21", "non-canonical NaN"),
        (b"\x21\x00\x07\xff\xff\xff\xff\xff\xff", 0, "0x21", "non-canonical NaN"),
        (b"\x02\xff\x00", 0, "0x02", "UTF-8"),
    ],
)
def test_unpack_rejects_malformed_bytes(data: bytes, offset: int, byte: str, reason: str) -> None:
    with pytest.raises(InvalidTuple) as raised:
        unpack(data)
    message = str(raised.value)
    assert f"offset {offset}: {byte}" in message
    assert reason in message


def test_unpack_error_offsets_count_the_prefix() -> None:
    with pytest.raises(InvalidTuple, match="offset 3: 0x42"):
        unpack(b"pre\x42", prefix_bytes=3)


@pytest.mark.parametrize("prefix_bytes", [-1, 4])
def test_unpack_rejects_prefix_bytes_out_of_range(prefix_bytes: int) -> None:
    with pytest.raises(InvalidTuple, match=r"outside 0\.\.3"):
        unpack(b"\x15\x01\x14", prefix_bytes)


@pytest.mark.parametrize("data", ["\x14", bytearray(b"\x14"), None])
def test_unpack_rejects_non_bytes(data: object) -> None:
    with pytest.raises(InvalidTuple, match="expects bytes"):
        unpack(data)  # type: ignore[arg-type]
