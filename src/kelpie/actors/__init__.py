"""Kelpie's virtual actor runtime: activation on demand, turns, fenced commits, timers, reminders."""

from __future__ import annotations

from kelpie.actors.actor import Actor, ReminderFired, TimerFired, handler
from kelpie.actors.context import ActorContext, ActorKV
from kelpie.actors.ids import ActorId
from kelpie.actors.runtime import ActorRef, ActorRuntime, RuntimeStatistics

__all__ = [
    "Actor",
    "ActorContext",
    "ActorId",
    "ActorKV",
    "ActorRef",
    "ActorRuntime",
    "ReminderFired",
    "RuntimeStatistics",
    "TimerFired",
    "handler",
]
