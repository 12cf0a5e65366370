"""The heartbeat's rules (qaex.protocol.liveness): what counts as a client's silence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qaex.protocol.liveness import PONG_STEPS, Liveness, PongWait


def test_silence_counts_from_the_later_of_the_last_frame_and_the_last_rtn_data() -> None:
    liveness = Liveness(0.0)
    liveness.heard = 10.0
    assert liveness.silent_for(25.0, owed=False) == 15.0
    liveness.sent = 20.0  # the client owes a peek for this
    assert liveness.silent_for(25.0, owed=False) == 5.0


def test_no_silence_while_the_server_owes_the_client_data() -> None:
    liveness = Liveness(0.0)
    assert liveness.silent_for(1e6, owed=True) == 0.0
    assert liveness.silent_for(1e6, owed=False) == 1e6  # once paid, the client's silence counts again


def test_a_pong_wait_expires_after_its_timeout_when_the_server_keeps_up() -> None:
    wait = PongWait(15.0)
    for _ in range(PONG_STEPS - 1):
        wait.waited(wait.step)
        assert not wait.expired
    wait.waited(wait.step)
    assert wait.expired


@given(st.lists(st.floats(min_value=0.0, max_value=1e5), min_size=1, max_size=PONG_STEPS - 1))
def test_however_late_the_server_wakes_a_pong_wait_needs_all_its_steps(lateness: list[float]) -> None:
    """A process that fell behind wakes late; each late wake-up counts as one step, never more, so its
    reader gets PONG_STEPS passes to read the pong before the client is given up."""
    wait = PongWait(15.0)
    for elapsed in lateness:
        wait.waited(elapsed)
    assert not wait.expired
