"""When a DIFF client counts as silent: the heartbeat's rules, free of IO.

Two things look like a silent client and are the server's own doing:

- **Its send backlog.** A DIFF client talks when it has something to answer: after each rtn_data it
  sends a peek. While the server owes it data (a peek is waiting and data is pending, but the server
  has not sent it yet, e.g. an overloaded gateway), the client has nothing to say. So the silence the
  heartbeat pings for counts from the later of the client's last frame and the server's last
  rtn_data, and not at all while the server owes it data (:meth:`Liveness.silent_for`).
- **Its own lag.** A pong is only seen once the server's event loop reads it. A process that fell
  behind (a long scheduler pass, a starved CPU) wakes past the pong deadline with the pong unread in
  its socket buffer, and would close every session it pinged at once. So the pong wait is counted in
  steps (:class:`PongWait`): a wake-up that comes late counts as one step, not as the time the
  process spent behind, and the reader gets a pass between two steps to read the pong.

A client that answers neither pings nor data is still closed: once the server has sent what it owed,
and the steps of a ping's wait have passed without a pong, it is given up.
"""

from __future__ import annotations

PONG_STEPS = 10
"""Steps a ping's timeout is counted in (see PongWait)."""


class Liveness:
    """One session's last frame from the client and last rtn_data to it (times on one clock)."""

    __slots__ = ("heard", "sent")

    def __init__(self, now: float) -> None:
        self.heard = now  # the client's last frame
        self.sent = now  # the server's last rtn_data (the client owes a peek for it)

    def silent_for(self, now: float, owed: bool) -> float:
        """Seconds the client has been silent by its own doing; 0 while the server owes it data (`owed`)."""
        if owed:
            return 0.0
        return now - max(self.heard, self.sent)


class PongWait:
    """The wait for one pong: `timeout` seconds of the server's running time, in PONG_STEPS steps."""

    __slots__ = ("counted", "step", "timeout")

    def __init__(self, timeout: float, steps: int = PONG_STEPS) -> None:
        self.timeout = timeout
        self.step = timeout / steps
        self.counted = 0.0

    def waited(self, elapsed: float) -> None:
        """One step's wait is over, `elapsed` seconds after it began: it counts at most one step."""
        self.counted += min(elapsed, self.step)

    @property
    def expired(self) -> bool:
        return self.counted >= self.timeout - 1e-9
