"""A stand-in for dnsmasq's start/stop commands in unit and functional tests.

    fake_dnsmasq.py start PIDFILE   start a detached long-lived process
                                    named "dnsmasq", and write PIDFILE
    fake_dnsmasq.py stop PIDFILE    SIGTERM it and wait until it is gone

The process is ``sleep`` run through a symlink named ``dnsmasq`` beside
PIDFILE: the kernel names a process after the file it executes, so it looks
like dnsmasq to pxefilterd's pid-file check.  Only the process recorded in
PIDFILE (started by this script) is signalled.
"""

import os
import shutil
import signal
import subprocess
import sys
import time


def alive(pid):
    """True if ``pid`` runs and is not a zombie (PID 1 may not reap)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (FileNotFoundError, ProcessLookupError):
        return False


def start(pidfile):
    exe = os.path.join(os.path.dirname(os.path.abspath(pidfile)), 'dnsmasq')
    if not os.path.lexists(exe):
        os.symlink(shutil.which('sleep'), exe)
    proc = subprocess.Popen(
        [exe, '3600'], start_new_session=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(pidfile + '.tmp', 'w') as f:
        f.write('%d\n' % proc.pid)
    os.rename(pidfile + '.tmp', pidfile)
    return 0


def stop(pidfile):
    try:
        with open(pidfile) as f:
            pid = int(f.read())
    except FileNotFoundError:
        print('not running')
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.unlink(pidfile)
    return 0


if __name__ == '__main__':
    action, pidfile = sys.argv[1:3]
    sys.exit(start(pidfile) if action == 'start' else stop(pidfile))
