"""Live events: Server-Sent Events and a websocket, topics declared by plugins.

A plugin declares topics (``hostcore_event_topics``) with the scope that reads them
and, optionally, a source that runs while someone listens. See ``docs/events.md``.
"""

from __future__ import annotations

from hostcore.events.hub import Event, EventHub, Publish, Subscriber, Topic

__all__ = ["Event", "EventHub", "Publish", "Subscriber", "Topic"]
