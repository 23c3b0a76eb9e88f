"""Would sudo let the daemon's user run its commands?  Asked by check-config.

``check-config`` usually runs as root, for whom sudo allows everything;
the daemon runs as its own user, whom only the sudoers rule allows, and
only for the exact program path it names.  A rule naming
``/usr/bin/pxefilterd-rootwrap`` while sudo finds the program in
``/usr/local/bin`` (pip's place) lets every start of dnsmasq fail, after
check-config said OK.  ``sudo -l COMMAND`` answers without running
anything: as root for another user (``-U USER``), or as that user itself
(a root-run pxefilterd-ctl has become the daemon's user by then).
"""

import os
import pwd
import subprocess

#: Seconds allowed to one ``sudo -l``.
TIMEOUT = 10


def daemon_user(hostsdir):
    """Return the name of the user who owns *hostsdir* (or its nearest
    existing parent), taken as the daemon's user; None when that is root,
    or when nothing there exists or has a name."""
    path = os.path.abspath(hostsdir)
    while True:
        try:
            uid = os.stat(path).st_uid
            break
        except OSError:
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent
    if uid == 0:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def refusal(user, argv, sudo='sudo'):
    """Return None if sudo lets *user* run *argv* (without a password), or
    one line saying what sudo answered.

    Root asks about *user*; anyone else only about themselves (the caller
    checks).  Never raises: a sudo that cannot be run or that hangs is a
    refusal too.
    """
    who = ['-U', user] if os.geteuid() == 0 else []
    try:
        res = subprocess.run(
            [sudo, '-n', '-l'] + who + ['--'] + list(argv),
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 'sudo -l could not be asked: %s' % exc
    if res.returncode == 0:
        return None
    said = ' '.join((res.stderr or res.stdout).split())
    return 'sudo would refuse it%s' % (': ' + said if said else '')
