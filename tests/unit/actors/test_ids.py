"""Actor ids: built, parsed, printed and refused."""

from __future__ import annotations

import pytest

from kelpie import limits
from kelpie.actors import ActorId
from kelpie.errors import InvalidActorId, InvalidArgument


def test_of_builds_the_three_parts() -> None:
    actor_id = ActorId.of("default", "counter", "c-1")
    assert (actor_id.namespace, actor_id.type, actor_id.key) == ("default", "counter", "c-1")
    assert str(actor_id) == "default/counter/c-1"


def test_parse_round_trips_and_lets_the_key_hold_slashes() -> None:
    assert ActorId.parse("default/counter/c-1") == ActorId("default", "counter", "c-1")
    with_slashes = ActorId.parse("default/agent/team/alice/1")
    assert with_slashes.key == "team/alice/1"
    assert ActorId.parse(str(with_slashes)) == with_slashes


def test_ids_are_hashable_values() -> None:
    assert len({ActorId.of("a", "b", "c"), ActorId.parse("a/b/c")}) == 1


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a/b", "'a/b'"),
        ("counter", "'counter'"),
        ("", "''"),
        ("/counter/k", "namespace"),
        ("ns//k", "type"),
        ("ns/counter/", "key"),
        ("ns/count\x00er/k", "control"),
        ("ns/counter/line\nbreak", "control"),
    ],
)
def test_parse_refuses_malformed_text_naming_it(text: str, shown: str) -> None:
    with pytest.raises(InvalidActorId, match=shown):
        ActorId.parse(text)


@pytest.mark.parametrize("value", [None, 42, b"ns/counter/k", ("ns", "counter", "k")])
def test_parse_refuses_non_strings(value: object) -> None:
    with pytest.raises(InvalidActorId, match="must be a string") as info:
        ActorId.parse(value)
    assert repr(value)[:20] in str(info.value)


@pytest.mark.parametrize(
    ("parts", "shown"),
    [
        ((1, "counter", "k"), "namespace must be a non-empty string, got 1"),
        (("ns", None, "k"), "type must be a non-empty string, got None"),
        (("ns", "counter", b"k"), "key must be a non-empty string, got b'k'"),
        (("ns", "counter", ""), "key must be a non-empty string, got ''"),
        (("n/s", "counter", "k"), "namespace may not contain '/'"),
        (("ns", "coun/ter", "k"), "type may not contain '/'"),
    ],
)
def test_of_refuses_bad_parts_naming_them(parts: tuple[object, object, object], shown: str) -> None:
    with pytest.raises(InvalidActorId, match=shown.replace("(", r"\(")):
        ActorId.of(*parts)


def test_parts_at_the_length_limit_pass_and_one_more_is_refused() -> None:
    longest = "k" * limits.ACTOR_ID_PART_CHARS_LIMIT
    assert ActorId.of("ns", "counter", longest).key == longest
    too_long = longest + "k"
    with pytest.raises(InvalidActorId, match=f"{len(too_long)} characters exceeds the limit"):
        ActorId.of("ns", "counter", too_long)
    with pytest.raises(InvalidActorId, match="namespace"):
        ActorId.parse(f"{too_long}/counter/k")


def test_invalid_actor_id_is_bad_input() -> None:
    assert issubclass(InvalidActorId, InvalidArgument)
