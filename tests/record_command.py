"""A stand-in dnsmasq start/stop/reload command for tests.

Usage: record_command.py LOG NAME HOSTSDIR [EXIT_CODE [SLEEP]]

Appends one JSON line to LOG: the command name and what the hostsdir held
at that moment (so a test can prove *when* dnsmasq would have started).
"""

import json
import os
import sys
import time


def main():
    log, name, hostsdir = sys.argv[1:4]
    code = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    files = {}
    entries = os.listdir(hostsdir) if os.path.isdir(hostsdir) else []
    for entry in sorted(entries):
        with open(os.path.join(hostsdir, entry)) as f:
            files[entry] = f.read()
    with open(log, 'a') as f:
        f.write(json.dumps({'name': name, 'files': files,
                            'pid': os.getppid()}) + '\n')
    time.sleep(delay)
    return code


if __name__ == '__main__':
    sys.exit(main())
