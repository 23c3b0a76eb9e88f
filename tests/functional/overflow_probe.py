"""Make a HostsDirWatcher's kernel queue overflow; print 'lost' if reported.

Usage: overflow_probe.py HOSTSDIR /proc/sys/fs/inotify/max_queued_events

Run in a fresh process: watchdog shares one inotify instance per process,
and the kernel reads the queue limit when that instance is created.
"""

import subprocess
import sys
import time

from pxefilterd import watcher

WRITER = '''
import sys
from pxefilterd import hostsdir
from pxefilterd.policy import Action
s = hostsdir.HostsDir(sys.argv[1], staging_dir=sys.argv[1] + '.w')
s.check()
s.apply({'52:54:00:00:%02x:%02x' % (i // 256, i % 256): Action.DENY
         for i in range(2000)})
'''


def main():
    path, limit_file = sys.argv[1], sys.argv[2]
    w = watcher.HostsDirWatcher(path, lambda: None)
    with open(limit_file) as f:
        saved = f.read()
    with open(limit_file, 'w') as f:
        f.write('16')
    try:
        w.start()
    finally:
        with open(limit_file, 'w') as f:
            f.write(saved)
    # Starve the observer thread of the GIL while another process floods
    # the directory: the 16-event kernel queue must overflow.
    sys.setswitchinterval(5.0)
    writer = subprocess.Popen([sys.executable, '-c', WRITER, path])
    # A pure busy loop: no call in it releases the GIL (waiting on the
    # writer would).  2000 renames take well under a second.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        pass
    sys.setswitchinterval(0.005)
    writer.wait(30)
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            if w.take()[1]:
                print('lost')
                return 0
            time.sleep(0.05)
        return 1
    finally:
        w.stop()


if __name__ == '__main__':
    sys.exit(main())
