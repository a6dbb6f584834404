"""What an actor author writes: an :class:`Actor` subclass with ``@handler`` methods.

::

    @dataclass
    class Add:
        amount: int

    class Counter(Actor):
        type_name = "counter"

        def initial_state(self) -> dict[str, int]:
            return {"total": 0}

        @handler
        async def add(self, ctx: ActorContext, message: Add) -> int:
            ctx.state["total"] += message.amount
            return ctx.state["total"]

Each handler takes the context and one message; the message's class selects the handler.
The reply must be encodable by :mod:`kelpie.actors.codec`. State is a msgpack-able value (a dict by
default) or an instance of the class named by ``state_type`` (a dataclass).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from kelpie.errors import InvalidArgument, NoHandler, shorten

if TYPE_CHECKING:
    from kelpie.actors.context import ActorContext

__all__ = ["Actor", "Handler", "ReminderFired", "TimerFired", "handler"]

Handler = Callable[[Any, "ActorContext", Any], Coroutine[Any, Any, Any]]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def handler(function: F) -> F:
    """Mark an ``async def name(self, ctx, message: MessageType)`` method as the handler of
    ``MessageType``. The annotation of the ``message`` parameter selects the messages it handles."""
    function._kelpie_handler = True  # type: ignore[attr-defined]
    return function


@dataclass(frozen=True, slots=True)
class TimerFired:
    """Delivered to an actor when one of its volatile timers fires."""

    name: str


@dataclass(frozen=True, slots=True)
class ReminderFired:
    """Delivered to an actor when one of its durable reminders is due."""

    name: str
    due_wall_s: float


class Actor:
    """Base class of every actor. Subclasses set ``type_name`` and define ``@handler`` methods."""

    type_name: ClassVar[str]
    state_type: ClassVar[type[Any] | None] = None
    _handlers: ClassVar[dict[type[Any], Handler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type[Any], Handler] = {}
        for base in reversed(cls.__mro__[1:]):
            handlers.update(getattr(base, "_handlers", {}))
        for name, member in vars(cls).items():
            if not getattr(member, "_kelpie_handler", False):
                continue
            if not inspect.iscoroutinefunction(member):
                raise InvalidArgument(f"handler {cls.__name__}.{name} must be an 'async def' method")
            hints = typing.get_type_hints(member)
            parameters = list(hints.keys() - {"return"})
            message_type = hints.get("message")
            if message_type is None or not isinstance(message_type, type):
                raise InvalidArgument(
                    f"handler {cls.__name__}.{name} needs a 'message' parameter annotated with a class; "
                    f"found annotations {parameters}"
                )
            handlers[message_type] = member
        cls._handlers = handlers

    def initial_state(self) -> Any:
        """The state of an actor that has never committed. Default: ``state_type()`` or ``{}``."""
        return self.state_type() if self.state_type is not None else {}

    async def on_activate(self, ctx: ActorContext) -> None:
        """Called in a turn of its own when the actor is activated, after its state is loaded."""

    async def on_deactivate(self, ctx: ActorContext) -> None:
        """Called in a final turn before the actor is deactivated (idle, or runtime shutdown)."""

    async def on_idle(self, ctx: ActorContext) -> None:
        """Called in a turn once the actor has been idle for the runtime's idle-notice time."""

    @classmethod
    def handler_for(cls, message: object) -> Handler:
        """The handler of ``message``'s class (or its nearest base class).

        Raises:
            NoHandler: no handler accepts this message.
        """
        for message_class in type(message).__mro__:
            found = cls._handlers.get(message_class)
            if found is not None:
                return found
        accepted = sorted(message_type.__name__ for message_type in cls._handlers)
        raise NoHandler(
            f"actor type {cls.type_name!r} has no handler for {type(message).__name__} {shorten(message)}; "
            f"it handles {accepted}"
        )
