import os
import signal

import pytest

from byol.train.signals import StopRequests


def test_a_signal_is_recorded_as_a_request_and_a_second_ctrl_c_interrupts_at_once():
    previous = signal.getsignal(signal.SIGTERM)
    with StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal == signal.SIGTERM and stop.name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == signal.SIGINT  # the first Ctrl-C is a request like SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
