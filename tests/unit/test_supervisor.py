"""dnsmasq supervision: every transition of the state machine, driven with
plain numbers for the clock -- no thread, no process, no sleep."""

import logging
import re

import pytest

from pxefilterd import dnsmasq
from pxefilterd import guard
from pxefilterd import supervisor
from pxefilterd.supervisor import Do
from pxefilterd.supervisor import Done
from pxefilterd.supervisor import State

UP = dnsmasq.Observation(dnsmasq.RUNNING, 42, 'pid 42')
DOWN = dnsmasq.Observation(dnsmasq.GONE, 42, 'pid 42 (from x.pid) does not '
                           'exist')
UNREADABLE = dnsmasq.Observation(dnsmasq.UNKNOWN, detail='its pid file x.pid '
                                 'cannot be read: Permission denied')
NO_PID_FILE = dnsmasq.observe(None)
OK = Done()
GRACE = supervisor.START_GRACE


def started(observed=True, at=0.0):
    """A supervisor whose first start succeeded at ``at``."""
    sup = supervisor.Supervisor(managed=True, observed=observed)
    sup.begin('the first sync is done')
    assert sup.step(at, UP if observed else NO_PID_FILE, OK).do is Do.STARTED
    return sup


def running(at=0.0):
    """A supervised dnsmasq seen running, started at ``at``, now old."""
    sup = started(at=at)
    assert sup.step(at + GRACE, UP).do is Do.NOTHING
    assert sup.state is State.RUNNING
    return sup


def in_backoff(observed=True):
    sup = supervisor.Supervisor(managed=True, observed=observed)
    sup.begin('first')
    assert sup.step(0.0, NO_PID_FILE, Done('exit status 3')).do is Do.NOTHING
    assert sup.state is State.BACKOFF
    return sup


# -- starting ---------------------------------------------------------------

def test_not_started_before_the_first_sync():
    sup = supervisor.Supervisor(managed=True, observed=True)
    assert sup.state is State.STOPPED
    assert (sup.status, sup.serving, sup.running) == ('stopped', False, False)


def test_begin_runs_the_start_command():
    sup = supervisor.Supervisor(managed=True, observed=True)
    action = sup.begin('the first sync is done')
    assert action == supervisor.Action(Do.START, 'the first sync is done')
    assert sup.state is State.STARTING
    assert (sup.status, sup.serving, sup.running) == ('starting', False,
                                                      False)


def test_nothing_while_the_start_command_runs():
    sup = supervisor.Supervisor(managed=True, observed=True)
    sup.begin('first')
    for now in (0.0, 10.0, 100.0):
        assert sup.step(now, DOWN).do is Do.NOTHING
    assert sup.state is State.STARTING
    assert sup.detail == ''      # not looked at meanwhile


def test_a_start_that_succeeded_waits_for_the_pid_file():
    sup = supervisor.Supervisor(managed=True, observed=True)
    sup.begin('the first sync is done')
    action = sup.step(5.0, DOWN, OK)
    assert action == supervisor.Action(Do.STARTED, 'the first sync is done')
    assert sup.state is State.LAUNCHED
    assert (sup.status, sup.serving, sup.running) == ('starting', True, True)
    assert sup.starts == 1
    # young: it may still show up
    assert sup.step(5.0 + GRACE - 0.1, DOWN).do is Do.NOTHING
    assert sup.state is State.LAUNCHED
    assert sup.step(5.0 + GRACE - 0.05, UP).do is Do.NOTHING
    assert sup.state is State.RUNNING
    assert (sup.status, sup.detail) == ('running', 'pid 42')


def test_a_start_seen_running_at_once_is_running():
    sup = started()
    assert sup.state is State.RUNNING


def test_a_start_without_a_pid_file_is_unobserved():
    sup = started(observed=False)
    assert sup.state is State.UNOBSERVED
    assert (sup.status, sup.serving, sup.running) == (
        'not observed', True, True)
    assert 'dnsmasq_pid_file' in sup.detail
    # nothing it looks at changes that
    assert sup.step(1000.0, NO_PID_FILE).do is Do.NOTHING
    assert sup.state is State.UNOBSERVED


def test_started_again_is_logged(caplog):
    sup = running()
    caplog.set_level(logging.WARNING, logger='pxefilterd.supervisor')
    sup.step(100.0, DOWN)
    assert sup.step(101.0, UP, OK) == supervisor.Action(Do.STARTED,
                                                        DOWN.detail)
    assert sup.starts == 2
    assert ('dnsmasq started again (%s)' % DOWN.detail) in caplog.messages


# -- failed starts, backoff, giving up ---------------------------------------

def test_a_failing_start_command_backs_off_then_is_retried():
    sup = in_backoff()
    assert (sup.status, sup.serving, sup.running) == ('stopped', False,
                                                      False)
    assert (sup.failures, sup.due) == (1, 1.0)
    assert sup.step(0.9, DOWN).do is Do.NOTHING
    assert sup.state is State.BACKOFF
    assert sup.step(1.0, DOWN) == supervisor.Action(Do.RELAUNCH, 'retry')
    assert sup.state is State.STARTING and sup.due is None


def test_failed_starts_back_off_exponentially_then_are_fatal(caplog):
    caplog.set_level(logging.ERROR, logger='pxefilterd.supervisor')
    sup = supervisor.Supervisor(managed=True, observed=True)
    sup.begin('first')
    now, waits = 0.0, []
    for _ in range(supervisor.START_ATTEMPTS - 1):
        assert sup.step(now, DOWN, Done('exit status 3')).do is Do.NOTHING
        waits.append(sup.due - now)
        now = sup.due
        assert sup.step(now, DOWN).do is Do.RELAUNCH
    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert 'dnsmasq start 1 of 5 failed; trying again in 1 s: exit status 3' \
        in caplog.messages
    action = sup.step(now, DOWN, Done('exit status 3'))
    assert action.do is Do.FATAL
    assert action.why == ('dnsmasq could not be started 5 times in a row; '
                          'giving up (systemd restarts pxefilterd and dnsmasq '
                          'together): exit status 3')


def test_the_backoff_is_capped(monkeypatch):
    monkeypatch.setattr(supervisor, 'START_ATTEMPTS', 10)
    sup = supervisor.Supervisor(managed=True, observed=True)
    sup.begin('first')
    now, waits = 0.0, []
    for _ in range(8):
        sup.step(now, DOWN, Done('no'))
        waits.append(sup.due - now)
        now = sup.due
        sup.step(now, DOWN)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0, 16.0]


def test_a_dnsmasq_that_never_shows_up_is_stopped_before_the_next_try():
    sup = supervisor.Supervisor(managed=True, observed=True)
    sup.begin('first')
    sup.step(0.0, DOWN, OK)
    action = sup.step(GRACE, DOWN)
    assert action == supervisor.Action(Do.STOP, 'dnsmasq did not show up')
    assert sup.state is State.BACKOFF and sup.failures == 1
    assert sup.step(GRACE + 1.0, DOWN).do is Do.RELAUNCH


def test_a_dnsmasq_that_never_shows_up_is_fatal_at_the_last_attempt():
    sup = supervisor.Supervisor(managed=True, observed=True)
    sup.begin('first')
    now, tries = 0.0, 0
    for _ in range(supervisor.START_ATTEMPTS):
        tries += 1
        sup.step(now, DOWN, OK)
        now += GRACE
        action = sup.step(now, DOWN)
        if action.do is Do.FATAL:
            break
        assert action.do is Do.STOP
        now = sup.due
        assert sup.step(now, DOWN).do is Do.RELAUNCH
    assert action.do is Do.FATAL and tries == supervisor.START_ATTEMPTS
    assert 'did not run 15 s after its start command' in action.why
    assert sup.starts == supervisor.START_ATTEMPTS


def test_a_death_soon_after_the_start_is_a_failed_start():
    sup = started(at=0.0)
    action = sup.step(3.0, DOWN)
    assert action.do is Do.NOTHING
    assert sup.state is State.BACKOFF and sup.failures == 1
    assert (sup.serving, sup.running) == (False, False)
    assert sup.detail == DOWN.detail


def test_a_child_seen_gone_at_the_first_look_is_a_failed_start_at_once():
    """A child dnsmasq is looked at with waitpid: gone is gone, there is no
    pid file to wait for (no START_GRACE) and nothing left to stop."""
    sup = supervisor.Supervisor(managed=True, observed=True, direct=True)
    sup.begin('first')
    now = 0.0
    for attempt in range(1, supervisor.START_ATTEMPTS):
        assert sup.step(now, DOWN, OK).do is Do.STARTED
        assert sup.state is State.BACKOFF and sup.failures == attempt
        assert (sup.serving, sup.running) == (False, False)
        now = sup.due
        assert sup.step(now, DOWN).do is Do.RELAUNCH
    action = sup.step(now, DOWN, OK)
    assert action.do is Do.FATAL
    assert 'exited 0.0 s after it was started: %s' % DOWN.detail in action.why


def test_a_child_seen_gone_later_while_launched_is_a_failed_start():
    sup = supervisor.Supervisor(managed=True, observed=True, direct=True)
    sup.begin('first')
    # (an unknown look cannot come from waitpid; the state is LAUNCHED)
    assert sup.step(0.0, UNREADABLE, OK).do is Do.STARTED
    assert sup.state is State.LAUNCHED
    assert sup.step(0.5, DOWN).do is Do.NOTHING
    assert sup.state is State.BACKOFF and sup.failures == 1


def test_a_dnsmasq_that_keeps_dying_young_is_fatal():
    sup = started(at=0.0)
    now = 0.0
    for _ in range(supervisor.START_ATTEMPTS - 1):
        now += 2.0
        assert sup.step(now, DOWN).do is Do.NOTHING     # died young
        now = sup.due
        assert sup.step(now, DOWN).do is Do.RELAUNCH
        assert sup.step(now, UP, OK).do is Do.STARTED
    action = sup.step(now + 2.0, DOWN)
    assert action.do is Do.FATAL
    assert 'exited 2.0 s after it was started' in action.why


def test_failures_end_when_it_stays_up_past_the_grace():
    sup = in_backoff()
    sup.step(sup.due, DOWN)
    sup.step(1.0, UP, OK)
    assert sup.state is State.RUNNING
    sup.step(1.0 + GRACE - 1.0, UP)
    assert sup.failures == 1         # still young: not proven yet
    sup.step(1.0 + GRACE, UP)
    assert sup.failures == 0


def test_failures_end_with_a_start_that_succeeded_without_a_pid_file():
    sup = in_backoff(observed=False)
    assert sup.step(1.0, NO_PID_FILE).do is Do.RELAUNCH
    assert sup.step(2.0, NO_PID_FILE, OK).do is Do.STARTED
    assert sup.state is State.UNOBSERVED and sup.failures == 0


# -- a dnsmasq that stops -----------------------------------------------------

def test_a_dnsmasq_that_died_is_restarted(caplog):
    caplog.set_level(logging.ERROR, logger='pxefilterd.supervisor')
    sup = running()
    action = sup.step(100.0, DOWN)
    assert action == supervisor.Action(
        Do.RELAUNCH, DOWN.detail,
        notice='dnsmasq not running (%s); restarting' % DOWN.detail)
    assert sup.state is State.STARTING
    assert (sup.serving, sup.running) == (False, False)
    assert sup.failures == 0
    assert caplog.messages == [
        'dnsmasq is not running (%s); re-asserting the hostsdir and starting '
        'it again' % DOWN.detail]


def test_an_unknown_look_keeps_the_state():
    sup = running()
    assert sup.step(100.0, UNREADABLE).do is Do.NOTHING
    assert sup.state is State.RUNNING
    assert sup.status == 'unknown (assumed running)'
    assert sup.detail == UNREADABLE.detail
    sup.step(101.0, UP)
    assert sup.status == 'running'


def test_an_unknown_look_while_launched_keeps_waiting_for_it():
    sup = supervisor.Supervisor(managed=True, observed=True)
    sup.begin('first')
    sup.step(0.0, DOWN, OK)
    assert sup.step(1.0, UNREADABLE).do is Do.NOTHING
    assert sup.state is State.LAUNCHED
    assert sup.status == 'unknown (assumed running)'
    # still the start that never showed up, not a crash
    assert sup.step(GRACE, DOWN).do is Do.STOP


# -- the guard ran the stop command -------------------------------------------

@pytest.mark.parametrize('status', [guard.EXIT_TERMINATED,
                                    guard.EXIT_ORPHANED])
def test_the_guard_stopping_an_unobserved_dnsmasq_restarts_it(status):
    sup = started(observed=False)
    action = sup.step(100.0, NO_PID_FILE, guard_exit=status)
    assert action.do is Do.RELAUNCH
    assert action.why == 'the guard was signalled and stopped it'
    assert action.notice
    assert sup.state is State.STARTING


def test_the_guard_stopping_it_during_a_backoff_restarts_it_now():
    sup = in_backoff(observed=False)
    action = sup.step(0.5, NO_PID_FILE, guard_exit=guard.EXIT_TERMINATED)
    assert action.do is Do.RELAUNCH
    assert sup.state is State.STARTING and sup.due is None


def test_the_guard_stopping_it_while_a_start_runs_changes_nothing():
    sup = supervisor.Supervisor(managed=True, observed=False)
    sup.begin('first')
    assert sup.step(1.0, NO_PID_FILE,
                    guard_exit=guard.EXIT_TERMINATED).do is Do.NOTHING
    assert sup.state is State.STARTING
    # and a start that ended in that same step is taken in
    assert sup.step(2.0, NO_PID_FILE, OK,
                    guard_exit=guard.EXIT_TERMINATED).do is Do.STARTED


def test_with_a_pid_file_the_look_decides_after_the_guard():
    sup = running()
    assert sup.step(100.0, UP, guard_exit=guard.EXIT_TERMINATED).do \
        is Do.NOTHING
    assert sup.state is State.RUNNING
    assert sup.step(101.0, DOWN, guard_exit=guard.EXIT_TERMINATED).do \
        is Do.RELAUNCH


@pytest.mark.parametrize('status', [0, 1, -9])
def test_a_guard_that_did_not_stop_dnsmasq_changes_nothing(status):
    sup = started(observed=False)
    assert sup.step(100.0, NO_PID_FILE, guard_exit=status).do is Do.NOTHING
    assert sup.state is State.UNOBSERVED


@pytest.mark.parametrize('observed', [True, False])
def test_the_guard_stopping_a_dnsmasq_started_elsewhere_is_fatal(observed):
    sup = supervisor.Supervisor(managed=False, observed=observed)
    sup.adopt()
    action = sup.step(1.0, UP, guard_exit=guard.EXIT_ORPHANED)
    assert action.do is Do.FATAL
    assert 'no dnsmasq_start_command' in action.why


# -- dnsmasq started by someone else -----------------------------------------

def test_adopted_with_a_pid_file_it_is_looked_at(caplog):
    caplog.set_level(logging.ERROR, logger='pxefilterd.supervisor')
    sup = supervisor.Supervisor(managed=False, observed=True)
    assert not sup.serving
    sup.adopt()
    assert sup.state is State.ELSEWHERE
    assert (sup.status, sup.serving, sup.running) == (
        'unknown (assumed running)', True, True)
    assert sup.step(1.0, UP).do is Do.NOTHING
    assert sup.state is State.RUNNING
    # gone: logged once, never started by pxefilterd, still served to
    for now in (2.0, 3.0, 4.0):
        assert sup.step(now, DOWN).do is Do.NOTHING
    assert sup.state is State.GONE
    assert (sup.status, sup.serving, sup.running) == ('gone', True, False)
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith('dnsmasq (started elsewhere) is not '
                                         'running')
    assert sup.step(5.0, UNREADABLE).do is Do.NOTHING
    assert (sup.state, sup.status) == (State.GONE, 'unknown')
    assert sup.step(6.0, DOWN).do is Do.NOTHING
    assert len(caplog.messages) == 1
    sup.step(7.0, UP)
    assert sup.state is State.RUNNING
    sup.step(8.0, DOWN)
    assert len(caplog.messages) == 2      # gone again
    assert sup.starts == 0


def test_adopted_gone_at_the_first_look():
    sup = supervisor.Supervisor(managed=False, observed=True)
    sup.adopt()
    sup.step(1.0, DOWN)
    assert sup.state is State.GONE


def test_adopted_without_a_pid_file_is_unobserved():
    sup = supervisor.Supervisor(managed=False, observed=False)
    sup.adopt()
    assert sup.state is State.UNOBSERVED
    assert sup.step(100.0, NO_PID_FILE).do is Do.NOTHING
    assert sup.status == 'not observed'
    assert 'dnsmasq_pid_file' in sup.detail


# -- exit ---------------------------------------------------------------------

@pytest.mark.parametrize('make', [started, running, in_backoff])
def test_stopped_at_exit(make):
    sup = make()
    sup.step(1.0, UNREADABLE)
    sup.stopped()
    assert sup.state is State.STOPPED
    assert (sup.status, sup.serving, sup.running) == ('stopped', False,
                                                      False)


# -- the documentation --------------------------------------------------------

def test_the_docstring_table_of_states_is_the_code():
    table = supervisor.__doc__.split('States::')[1].split('- STOPPED')[0]
    rows = {}
    for line in table.strip().splitlines()[1:]:
        name, status, serving, running_ = re.split(r'\s{2,}', line.strip())
        rows[State[name]] = (status, serving == 'yes', running_ == 'yes')
    assert set(rows) == set(State)
    for state, (status, serving, running_) in rows.items():
        assert supervisor.STATUS[state] == status, state
        assert (state in supervisor._SERVING) == serving, state
        assert (state in supervisor._RUNNING) == running_, state


def test_every_state_is_reached_in_the_transition_table():
    table = supervisor.__doc__.split('from        on')[1]
    rows = [line.split() for line in table.split('\n\n')[0].splitlines()]
    reached = {row[-2] for row in rows if row}
    assert {s.name for s in State} <= reached | {'STARTING'}
    assert {d.name for d in Do} <= {row[-1] for row in rows if row}
