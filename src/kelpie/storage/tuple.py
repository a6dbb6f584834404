"""Order-preserving tuple encoding in the shape of FoundationDB's tuple layer.

``pack`` turns a tuple into bytes whose byte order matches the tuple's natural order, so a range
read over packed keys walks tuples in order. The format is FoundationDB's (keys written here read
the same as keys written by an FDB binding), restricted to the element types Kelpie needs:

==========  ===========================  =================================================
type code   element                      encoding after the code
==========  ===========================  =================================================
0x00        ``None``                     nothing (inside a nested tuple: ``0x00 0xff``)
0x01        ``bytes``                    bytes, each 0x00 escaped as 0x00 0xff, then 0x00
0x02        ``str``                      UTF-8, escaped and terminated as for bytes
0x05        nested ``tuple``             its elements, then 0x00
0x0b        int ≤ -2**64                 one's complement of the length, then of the value
0x0c–0x13   int in -(2**64)+1 … -1       8…1 bytes: big-endian value + 256**n - 1
0x14        int 0                        nothing
0x15–0x1c   int in 1 … 2**64-1           1…8 bytes: big-endian value
0x1d        int ≥ 2**64                  length byte, then the big-endian value
0x21        ``float``                    IEEE double, sign-transformed (see below)
0x26/0x27   ``False`` / ``True``         nothing
0x30        ``uuid.UUID``                its 16 bytes
==========  ===========================  =================================================

Ordering. Elements of one type sort as Python sorts them; elements of different types sort by
type code: None < bytes < str < tuple < int < float < False < True < UUID. Ints and floats are
different types here and never interleave: every int sorts before every float. Tuples compare
element by element, and a tuple sorts before every longer tuple it is a prefix of.

Floats. A double's bits are flipped entirely when its sign bit is set and only in the sign bit
otherwise, so byte order is numeric order: -inf < … < -0.0 < 0.0 < … < inf < nan. ``-0.0`` and
``0.0`` are distinct keys (the sign survives a round trip). Every NaN packs as the one canonical
quiet NaN, so a NaN always finds the same key.

Canonical form. ``unpack`` accepts exactly the bytes ``pack`` produces: an int with a redundant
leading byte, a big-int code for a value that fits in eight bytes, a NaN other than the canonical
one, invalid UTF-8 or trailing garbage are all rejected. So every key names one tuple and
``pack(unpack(key)) == key`` whenever ``unpack`` succeeds. Single floats (0x20), versionstamps
(0x33) and the other FDB codes are not supported.
"""

from __future__ import annotations

import struct
import uuid
from typing import Final, TypeAlias

from kelpie.errors import InvalidTuple, shorten

__all__ = ["TUPLE_NESTING_DEPTH_LIMIT", "TupleItem", "pack", "range_of", "strinc", "unpack"]

TupleItem: TypeAlias = bytes | str | int | float | bool | uuid.UUID | tuple["TupleItem", ...] | None

# Nested tuples are encoded recursively; the limit keeps hostile bytes from exhausting the stack.
TUPLE_NESTING_DEPTH_LIMIT: Final = 100

_NULL: Final = 0x00
_BYTES: Final = 0x01
_STRING: Final = 0x02
_NESTED: Final = 0x05
_NEGATIVE_BIG_INT: Final = 0x0B
_INT_ZERO: Final = 0x14
_POSITIVE_BIG_INT: Final = 0x1D
_DOUBLE: Final = 0x21
_FALSE: Final = 0x26
_TRUE: Final = 0x27
_UUID: Final = 0x30

_SMALL_INT_BYTES_MAX: Final = 8
_BIG_INT_BYTES_MAX: Final = 0xFF  # the length must fit in one byte
_UUID_BYTES: Final = 16
_SIGN_BIT: Final = 1 << 63
_ALL_BITS: Final = (1 << 64) - 1
_CANONICAL_NAN_BITS: Final = 0x7FF8_0000_0000_0000
_CANONICAL_NAN_ENCODED: Final = (_CANONICAL_NAN_BITS ^ _SIGN_BIT).to_bytes(8, "big")

_DOUBLE_STRUCT: Final = struct.Struct(">d")
_UINT64_STRUCT: Final = struct.Struct(">Q")

# Header bytes for ints of 1..8 bytes, indexed by byte count.
_POSITIVE_HEADERS: Final = tuple(bytes((_INT_ZERO + n,)) for n in range(_SMALL_INT_BYTES_MAX + 1))
_NEGATIVE_HEADERS: Final = tuple(bytes((_INT_ZERO - n,)) for n in range(_SMALL_INT_BYTES_MAX + 1))

_EXPECTED_TYPES: Final = "None, bytes, str, int, float, bool, uuid.UUID or a tuple of these"


def pack(items: tuple[TupleItem, ...], prefix: bytes = b"") -> bytes:
    """Encode ``items`` as ``prefix`` followed by their order-preserving encoding.

    Raises:
        InvalidTuple: ``items`` is not a tuple, ``prefix`` is not bytes, or an element (at any
            depth) has an unsupported type, is a str that is not valid Unicode, is an int whose
            magnitude needs more than 255 bytes, or nests tuples deeper than
            ``TUPLE_NESTING_DEPTH_LIMIT``.
    """
    if not isinstance(items, tuple):
        raise InvalidTuple(f"pack expects a tuple, got {type(items).__name__} {shorten(items)}")
    if not isinstance(prefix, bytes):
        raise InvalidTuple(f"prefix must be bytes, got {type(prefix).__name__} {shorten(prefix)}")
    out: list[bytes] = [prefix]
    for item in items:
        _encode(item, out, 0)
    return b"".join(out)


def unpack(data: bytes, prefix_bytes: int = 0) -> tuple[TupleItem, ...]:
    """Decode the tuple packed in ``data`` after its first ``prefix_bytes`` bytes.

    Raises:
        InvalidTuple: ``data`` is not bytes, ``prefix_bytes`` is outside ``0..len(data)``, or the
            bytes are not exactly what :func:`pack` produces (unknown type code, truncated element,
            non-canonical encoding, invalid UTF-8, nesting deeper than
            ``TUPLE_NESTING_DEPTH_LIMIT``); the message names the offset and the byte there.
    """
    if not isinstance(data, bytes):
        raise InvalidTuple(f"unpack expects bytes, got {type(data).__name__} {shorten(data)}")
    if not 0 <= prefix_bytes <= len(data):
        raise InvalidTuple(f"prefix_bytes={prefix_bytes} is outside 0..{len(data)} for {shorten(data)}")
    items, _ = _decode(data, prefix_bytes, 0)
    return tuple(items)


def range_of(items: tuple[TupleItem, ...], prefix: bytes = b"") -> tuple[bytes, bytes]:
    """Begin (inclusive) and end (exclusive) keys of every key that extends ``pack(items, prefix)``.

    The range holds the packing of every longer tuple that starts with ``items``; it does not
    hold ``pack(items, prefix)`` itself (FoundationDB's convention).

    Raises:
        InvalidTuple: as :func:`pack`.
    """
    packed = pack(items, prefix)
    return packed + b"\x00", packed + b"\xff"


def strinc(key: bytes) -> bytes:
    """The first key after every key that starts with ``key``.

    Raises:
        InvalidTuple: ``key`` is not bytes, or is empty or all 0xff bytes (no key follows it).
    """
    if not isinstance(key, bytes):
        raise InvalidTuple(f"strinc expects bytes, got {type(key).__name__} {shorten(key)}")
    stripped = key.rstrip(b"\xff")
    if not stripped:
        raise InvalidTuple(
            f"no key follows every key starting with {shorten(key)}: it is empty or all 0xff bytes"
        )
    return stripped[:-1] + bytes((stripped[-1] + 1,))


# --- encoding -----------------------------------------------------------------------------------


def _encode(value: object, out: list[bytes], depth: int) -> None:
    # Checks run in rough order of frequency in keys; bool must be tested before int.
    if isinstance(value, str):
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidTuple(f"cannot pack {shorten(value)}: it is not valid Unicode ({error})") from error
        out += (b"\x02", encoded.replace(b"\x00", b"\x00\xff"), b"\x00")
    elif isinstance(value, int):
        if isinstance(value, bool):
            out.append(b"\x27" if value else b"\x26")
        else:
            _encode_int(value, out)
    elif isinstance(value, bytes):
        out += (b"\x01", value.replace(b"\x00", b"\x00\xff"), b"\x00")
    elif value is None:
        out.append(b"\x00")
    elif isinstance(value, tuple):
        if depth >= TUPLE_NESTING_DEPTH_LIMIT:
            raise InvalidTuple(
                f"cannot pack {shorten(value)}: tuples nest deeper than {TUPLE_NESTING_DEPTH_LIMIT}"
            )
        out.append(b"\x05")
        for item in value:
            # Inside a nested tuple a bare 0x00 ends the tuple, so None is escaped.
            if item is None:
                out.append(b"\x00\xff")
            else:
                _encode(item, out, depth + 1)
        out.append(b"\x00")
    elif isinstance(value, float):
        out.append(b"\x21")
        out.append(_encode_double(value))
    elif isinstance(value, uuid.UUID):
        out.append(b"\x30")
        out.append(value.bytes)
    else:
        raise InvalidTuple(
            f"cannot pack {shorten(value)} of type {type(value).__name__}: "
            f"a tuple element must be {_EXPECTED_TYPES}"
        )


def _encode_int(value: int, out: list[bytes]) -> None:
    if value == 0:
        out.append(b"\x14")
        return
    magnitude = -value if value < 0 else value
    length = (magnitude.bit_length() + 7) >> 3
    if length > _BIG_INT_BYTES_MAX:
        raise InvalidTuple(
            f"cannot pack int {shorten(value)}: its magnitude needs {length} bytes, "
            f"more than the {_BIG_INT_BYTES_MAX} the encoding allows"
        )
    if value > 0:
        if length <= _SMALL_INT_BYTES_MAX:
            out.append(_POSITIVE_HEADERS[length])
        else:
            out.append(bytes((_POSITIVE_BIG_INT, length)))
        out.append(value.to_bytes(length, "big"))
    else:
        # One's complement of the magnitude, so larger magnitudes sort first.
        if length <= _SMALL_INT_BYTES_MAX:
            out.append(_NEGATIVE_HEADERS[length])
        else:
            out.append(bytes((_NEGATIVE_BIG_INT, length ^ 0xFF)))
        out.append(((1 << (length << 3)) - 1 - magnitude).to_bytes(length, "big"))


def _encode_double(value: float) -> bytes:
    if value != value:  # NaN: one canonical key for every NaN
        return _CANONICAL_NAN_ENCODED
    (bits,) = _UINT64_STRUCT.unpack(_DOUBLE_STRUCT.pack(value))
    bits ^= _ALL_BITS if bits & _SIGN_BIT else _SIGN_BIT
    return _UINT64_STRUCT.pack(bits)


# --- decoding -----------------------------------------------------------------------------------


def _malformed(data: bytes, offset: int, reason: str) -> InvalidTuple:
    byte = f"0x{data[offset]:02x}" if offset < len(data) else "end of data"
    return InvalidTuple(f"cannot unpack {shorten(data)}: {reason} (at offset {offset}: {byte})")


def _decode(data: bytes, position: int, depth: int) -> tuple[list[TupleItem], int]:
    """Decode elements from ``position``: to the end of data at depth 0, else to a 0x00 terminator.

    Returns the elements and the offset just past what was consumed.
    """
    items: list[TupleItem] = []
    end = len(data)
    start = position - 1  # offset of the enclosing 0x05, for error messages when nested
    while position < end:
        code = data[position]
        if code == _STRING:
            raw, next_position = _read_escaped(data, position)
            try:
                items.append(raw.decode("utf-8"))
            except UnicodeDecodeError as error:
                raise _malformed(data, position, f"string is not valid UTF-8 ({error})") from error
            position = next_position
        elif _NEGATIVE_BIG_INT <= code <= _POSITIVE_BIG_INT:
            value, position = _decode_int(data, position, code)
            items.append(value)
        elif code == _BYTES:
            raw, position = _read_escaped(data, position)
            items.append(raw)
        elif code == _NULL:
            if depth == 0:
                items.append(None)
                position += 1
            elif position + 1 < end and data[position + 1] == 0xFF:
                items.append(None)
                position += 2
            else:
                return items, position + 1
        elif code == _NESTED:
            if depth >= TUPLE_NESTING_DEPTH_LIMIT:
                raise _malformed(data, position, f"tuples nest deeper than {TUPLE_NESTING_DEPTH_LIMIT}")
            nested, position = _decode(data, position + 1, depth + 1)
            items.append(tuple(nested))
        elif code == _DOUBLE:
            items.append(_decode_double(data, position))
            position += 9
        elif code == _FALSE:
            items.append(False)
            position += 1
        elif code == _TRUE:
            items.append(True)
            position += 1
        elif code == _UUID:
            if position + 1 + _UUID_BYTES > end:
                raise _malformed(data, position, "UUID is truncated: it needs 16 bytes")
            items.append(uuid.UUID(bytes=data[position + 1 : position + 1 + _UUID_BYTES]))
            position += 1 + _UUID_BYTES
        else:
            raise _malformed(data, position, "unknown or unsupported type code")
    if depth > 0:
        raise _malformed(data, start, "nested tuple has no 0x00 terminator")
    return items, position


def _read_escaped(data: bytes, position: int) -> tuple[bytes, int]:
    """The unescaped body of the bytes/str element whose type code is at ``position``."""
    body_start = position + 1
    search = body_start
    while True:
        terminator = data.find(b"\x00", search)
        if terminator < 0:
            raise _malformed(data, position, "bytes or string has no 0x00 terminator")
        if terminator + 1 < len(data) and data[terminator + 1] == 0xFF:
            search = terminator + 2  # an escaped 0x00 inside the body
            continue
        break
    body = data[body_start:terminator]
    if search != body_start:
        body = body.replace(b"\x00\xff", b"\x00")
    return body, terminator + 1


def _decode_int(data: bytes, position: int, code: int) -> tuple[int, int]:
    if code == _INT_ZERO:
        return 0, position + 1
    if code in (_POSITIVE_BIG_INT, _NEGATIVE_BIG_INT):
        if position + 1 >= len(data):
            raise _malformed(data, position, "big int is truncated: its length byte is missing")
        length = data[position + 1] if code == _POSITIVE_BIG_INT else data[position + 1] ^ 0xFF
        if length <= _SMALL_INT_BYTES_MAX:
            raise _malformed(
                data, position, f"non-canonical int: big-int code with a length of {length} bytes"
            )
        body_start = position + 2
    else:
        length = code - _INT_ZERO if code > _INT_ZERO else _INT_ZERO - code
        body_start = position + 1
    body_end = body_start + length
    if body_end > len(data):
        raise _malformed(data, position, f"int is truncated: it needs {length} bytes")
    body = data[body_start:body_end]
    if code > _INT_ZERO:
        if body[0] == 0x00:
            raise _malformed(data, position, "non-canonical int: a redundant leading 0x00 byte")
        return int.from_bytes(body, "big"), body_end
    if body[0] == 0xFF:
        raise _malformed(data, position, "non-canonical int: a redundant leading 0xff byte")
    return int.from_bytes(body, "big") - ((1 << (length << 3)) - 1), body_end


def _decode_double(data: bytes, position: int) -> float:
    if position + 9 > len(data):
        raise _malformed(data, position, "double is truncated: it needs 8 bytes")
    (bits,) = _UINT64_STRUCT.unpack_from(data, position + 1)
    bits ^= _SIGN_BIT if bits & _SIGN_BIT else _ALL_BITS
    (value,) = _DOUBLE_STRUCT.unpack(_UINT64_STRUCT.pack(bits))
    if value != value and bits != _CANONICAL_NAN_BITS:
        raise _malformed(data, position, "non-canonical NaN: pack writes every NaN as 0x7ff8000000000000")
    return float(value)
