"""The hostsdir watcher on a real inotify: our renames, others' edits, and
lost events (kernel queue overflow) leading to a rescan."""

import os
import subprocess
import sys
import threading

import pytest

from pxefilterd import hostsdir
from pxefilterd import repair
from pxefilterd.policy import Action
from pxefilterd import watcher
from tests.waiting import wait_for

MAX_QUEUED = '/proc/sys/fs/inotify/max_queued_events'


@pytest.fixture
def store(tmp_path):
    path = tmp_path / 'hd'
    path.mkdir()
    s = hostsdir.HostsDir(str(path))
    s.lock()
    s.track_own_writes = True
    yield s
    s.unlock()


def test_own_renames_are_created_events_healed_without_writes(store):
    woken = threading.Event()
    w = watcher.HostsDirWatcher(store.path, woken.set)
    w.start()
    try:
        macs = ['52:54:00:00:01:%02x' % i for i in range(50)]
        store.apply({m: Action.DENY for m in macs})
        pending = {}
        wait_for(lambda: pending.update(w.take()[0]) or len(pending) == 50)
        assert all(pending.values())       # all "created only"
        written = store.files_written
        healer = repair.Repair(store)
        assert [healer.heal(n, created=c) for n, c in pending.items()] == \
            [None] * 50
        assert store.files_written == written
        with open(os.path.join(store.path, macs[0]), 'w') as f:
            f.write('tampered')
        pending = {}
        wait_for(lambda: pending.update(w.take()[0]) or macs[0] in pending)
        assert pending[macs[0]] is False
    finally:
        w.stop()


PROBE = os.path.join(os.path.dirname(__file__), 'overflow_probe.py')


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root to lower '
                    'fs.inotify.max_queued_events for one inotify instance')
def test_queue_overflow_is_reported_as_lost_events(tmp_path):
    (tmp_path / 'hd').mkdir()
    out = subprocess.run(
        [sys.executable, PROBE, str(tmp_path / 'hd'), MAX_QUEUED],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == 'lost', out.stderr
