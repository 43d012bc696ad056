"""The event log: append = persist, then publish; cursors; replay-then-live streams."""

from runyard.events.hub import Hub, RunChannel
from runyard.events.log import EventLog
from runyard.events.stream import follow

__all__ = ["EventLog", "Hub", "RunChannel", "follow"]
