"""The guard process: what it imports and where it runs."""

import os
import sys

from pxefilterd import commands
from pxefilterd import guard

EVIL = '''
import pathlib
pathlib.Path(%r).write_text('imported from the working directory')
'''


def test_the_guard_imports_nothing_from_the_working_directory(
        tmp_path, monkeypatch):
    """Started from a directory another user owns, the guard runs the
    installed pxefilterd, never a ``pxefilterd`` package found there; it
    runs in ``/`` and still does its job (the stop command runs)."""
    marker = tmp_path / 'marker'
    evil = tmp_path / 'cwd' / 'pxefilterd'
    evil.mkdir(parents=True)
    (evil / '__init__.py').write_text(EVIL % str(marker))
    (evil / 'guard.py').write_text(EVIL % str(marker))
    stopped = tmp_path / 'stopped'
    stop = commands.Command('stop', [sys.executable, '-c',
                                     'open(%r, "w").close()' % str(stopped)])
    monkeypatch.chdir(evil.parent)
    g = guard.Guard(stop, None)
    try:
        assert os.readlink('/proc/%d/cwd' % g.proc.pid) == '/'
        g.arm()
    finally:
        g.close(wait=30)      # end of file while armed: the stop runs
    assert g.proc.returncode == guard.EXIT_ORPHANED
    assert stopped.exists()
    assert not marker.exists()
