"""Running the dnsmasq start / stop / reload commands, with timeouts.

Commands are configured as command lines, split with shell quoting rules
(``shlex``) and run *without* a shell, prefixed by ``root_helper``: rootwrap
can only filter an argv, never a shell string.
"""

import logging
import os
import shlex
import signal
import subprocess
import time

LOG = logging.getLogger(__name__)


class CommandError(Exception):
    """A command failed, timed out or could not be run."""


def split(command_line):
    """Return the argv of a command line ([] for an empty one).

    :raises ValueError: the line cannot be parsed (e.g. unbalanced quotes).
    """
    return shlex.split(command_line or '')


class Command:
    """One configured command: ``root_helper + argv``, run with a timeout."""

    def __init__(self, name, argv, root_helper=(), timeout=30.0):
        self.name = name
        self.argv = list(argv)
        self.root_helper = list(root_helper)
        self.timeout = timeout

    def __bool__(self):
        return bool(self.argv)

    @property
    def full_argv(self):
        return self.root_helper + self.argv

    def run(self):
        """Run the command; return its combined output.

        Does nothing (returns '') for an empty command.  The child runs in
        its own process group, which is killed as a whole on timeout, so a
        hanging helper cannot outlive it.

        :raises CommandError: non-zero exit, timeout, or not executable.
        """
        if not self.argv:
            return ''
        argv = self.full_argv
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise CommandError(
                '%s command %s could not be run: %s'
                % (self.name, shlex.join(argv), exc.strerror)) from exc
        try:
            out, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise CommandError(
                '%s command %s timed out after %.1f s'
                % (self.name, shlex.join(argv), self.timeout)) from None
        text = out.decode('utf-8', 'replace').strip()
        if proc.returncode != 0:
            raise CommandError('%s command %s exited with %d: %s'
                               % (self.name, shlex.join(argv),
                                  proc.returncode, text[-500:]))
        LOG.info('%s command %s succeeded in %.2f s', self.name,
                 shlex.join(argv), time.monotonic() - started)
        return text


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # A D-state child: leave it; it is already SIGKILLed.
        pass


class Commands:
    """The start, stop and reload commands built from the configuration."""

    def __init__(self, start=(), stop=(), reload=(), root_helper=(),
                 timeout=30.0):
        self.start = Command('start', start, root_helper, timeout)
        self.stop = Command('stop', stop, root_helper, timeout)
        self.reload = Command('reload', reload, root_helper, timeout)

    @classmethod
    def from_conf(cls, conf):
        """Build from ``conf``; raise ValueError for an unparsable line."""
        group = conf.dnsmasq_pxe_filter
        return cls(start=split(group.dnsmasq_start_command),
                   stop=split(group.dnsmasq_stop_command),
                   reload=split(group.dnsmasq_reload_command),
                   root_helper=split(conf.root_helper),
                   timeout=group.command_timeout)
