"""The loop's wake-up and its requests, and the dnsmasq handle the
supervisor acts through."""

import sys

from pxefilterd import commands
from pxefilterd import dnsmasq
from pxefilterd import wakeup


def test_a_stop_keeps_its_first_reason_and_wakes():
    wake = wakeup.WakeUp()
    assert not wake.wait(0)
    wake.request_stop('received SIGTERM')
    wake.request_stop('received SIGINT')
    assert wake.stop_reason == 'received SIGTERM'
    assert wake.wait(0)
    wake.clear()
    assert not wake.wait(0)


def test_a_reload_is_taken_once():
    wake = wakeup.WakeUp()
    assert not wake.take_reload()
    wake.request_reload()
    assert wake.wait(0)
    assert wake.take_reload()
    assert not wake.take_reload()


def test_a_wake_up_from_a_signal_goes_through_the_relay():
    wake = wakeup.WakeUp()
    wake.prepare_for_signals()
    assert wake.wait(10)        # the relay's first byte
    wake.clear()
    wake.request_reload(from_signal=True)
    assert wake.wait(10)
    assert wake.take_reload()


def command(name, code):
    return commands.Command(name, [sys.executable, '-c',
                                   'import sys; sys.exit(%d)' % code])


def test_the_handle_reports_a_start_once_it_ended():
    cmds = commands.Commands()
    cmds.start = command('start', 0)
    handle = dnsmasq.Handle(cmds, dnsmasq.Immediate(), None)
    seen, done = handle.news()
    assert seen.state == dnsmasq.UNKNOWN and done is None
    handle.start()
    assert handle.news()[1] == dnsmasq.Done()
    assert handle.news()[1] is None      # told once
    cmds.start = command('start', 3)
    handle.start()
    done = handle.news()[1]
    assert 'exited with 3' in done.error


def test_the_handle_stops_after_a_start_in_flight(tmp_path):
    log = tmp_path / 'order'
    slow = commands.Command('start', [
        sys.executable, '-c', 'import time; time.sleep(0.5); '
        'open(%r, "a").write("start\\n")' % str(log)])
    stop = commands.Command('stop', [
        sys.executable, '-c', 'open(%r, "a").write("stop\\n")' % str(log)])
    cmds = commands.Commands()
    cmds.start, cmds.stop = slow, stop
    runner = dnsmasq.CommandRunner()
    try:
        handle = dnsmasq.Handle(cmds, runner, None)
        handle.start()
        handle.stop_now()
        assert log.read_text() == 'start\nstop\n'
    finally:
        runner.shutdown()
