"""Live events: Server-Sent Events and a websocket, topics declared by plugins.

A plugin declares topics (``hostcore_event_topics``) with the scope that reads them
and, optionally, a source that runs while someone listens. See ``docs/events.md``.
"""

from __future__ import annotations

from typing import Any

from hostcore.events.hub import Event, EventHub, Publish, Subscriber, Topic

__all__ = ["Event", "EventHub", "Publish", "Subscriber", "Topic", "end_streams"]


def end_streams(app: Any) -> None:
    """End every open event stream of ``app`` (the server is about to stop: a stream must
    not hold its graceful shutdown until the deadline kills the worker)."""
    hub = getattr(getattr(app, "state", None), "events", None)
    if isinstance(hub, EventHub):
        hub.end_all()
