"""Preemption signals: between steps, within the grace time, past it, and twice."""

import os
import signal
import time

import pytest

from rlvr.train.preempt import Abandon, Preempted, PreemptWatch


def kill_self(sig=signal.SIGTERM):
    os.kill(os.getpid(), sig)
    time.sleep(0.01)  # the handler runs at the next bytecode boundary


def busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.005)


def test_a_signal_during_a_step_lets_it_finish_then_stops_at_the_boundary():
    with PreemptWatch(grace_s=5.0, log=lambda m: None) as watch:
        watch.begin_step(0)
        kill_self()
        busy(0.05)  # the step goes on
        assert watch.requested and watch.name == "SIGTERM"
        watch.end_step(checkpoint_s=0.1)
        with pytest.raises(Preempted, match="SIGTERM before step 2"):
            watch.begin_step(1)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_sigint_is_a_preemption_too_and_a_second_signal_abandons():
    with PreemptWatch(grace_s=5.0, log=lambda m: None) as watch:
        watch.begin_step(0)
        kill_self(signal.SIGINT)
        assert watch.name == "SIGINT"
        with pytest.raises(Abandon, match="second signal"):
            kill_self(signal.SIGTERM)


def test_a_step_that_cannot_finish_within_the_grace_is_abandoned_at_once():
    with PreemptWatch(grace_s=1.0, log=lambda m: None) as watch:
        watch.begin_step(0)
        watch.end_step(checkpoint_s=0.4)
        watch.step_s = 3.0  # steps take 3 s; 1 s grace - 0.4 s checkpoint leaves 0.6 s
        watch.begin_step(1)
        began = time.monotonic()
        with pytest.raises(Abandon, match=r"about 3 s left, 0 s to checkpoint"):
            kill_self()
        assert time.monotonic() - began < 0.2


def test_a_step_still_running_when_only_the_checkpoint_time_is_left_is_abandoned():
    with PreemptWatch(grace_s=0.5, log=lambda m: None) as watch:
        watch.begin_step(0)
        watch.end_step(checkpoint_s=0.2)
        watch.step_s = 0.1  # expected to finish in time, but it hangs
        watch.begin_step(1)
        kill_self()
        began = time.monotonic()
        with pytest.raises(Abandon, match="still running"):
            busy(5.0)
        # the alarm fires at grace - checkpoint time = 0.3 s after the signal
        assert 0.25 < time.monotonic() - began < 0.6


def test_a_step_that_ends_in_time_cancels_the_alarm():
    with PreemptWatch(grace_s=0.3, log=lambda m: None) as watch:
        watch.begin_step(0)
        kill_self()
        watch.end_step(checkpoint_s=None)
        busy(0.4)  # past the alarm's time: no Abandon
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_arm_takes_the_signals_back_from_whoever_took_them():
    with PreemptWatch(grace_s=5.0, log=lambda m: None) as watch:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as ray.init installs its own handler
        watch.arm()
        watch.begin_step(0)
        kill_self()
        assert watch.requested
