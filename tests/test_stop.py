import signal

import pytest

from asr.distributed import Distributed
from asr.stop import StopSignal


def test_the_step_limit_stops_at_max_steps_and_zero_means_none():
    assert not StopSignal(5, Distributed()).check(4)
    assert StopSignal(5, Distributed()).check(5)
    assert not StopSignal(0, Distributed()).check(10**9)


def test_ctrl_c_asks_to_stop_and_a_second_one_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with StopSignal(0, Distributed()) as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested and stop.check(1)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back
