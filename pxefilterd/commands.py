"""The dnsmasq start / stop / reload commands: parsing, expansion, running.

A command line is one of two kinds:

* **plain** (no ``$`` and no backquote): split with shell quoting rules
  (``shlex``) once, and run as that argv;
* **with shell expansions** (``kill $(cat /run/dnsmasq.pid)``, as the dnsmasq
  PXE filter specification allows): at each run, ``/bin/sh`` -- running as
  pxefilterd's own unprivileged user -- expands the words, and only the
  resulting argv is run.  Operators (``;``, ``&&``, ``|``, redirections,
  sub-shells) outside an expansion are refused: the result must be one argv.

Either way the argv is prefixed by ``root_helper`` and run without a shell:
rootwrap only ever filters a plain argv, never a shell string.  Every run
has a timeout and kills the whole process group when it expires.
"""

import logging
import os
import shlex
import signal
import subprocess
import time

LOG = logging.getLogger(__name__)

SHELL = '/bin/sh'
# Each expanded word printed NUL-terminated: an argv with no further
# splitting, whatever the words contain.
_PRINT_WORDS = 'printf "%s\\0" '


class CommandError(Exception):
    """A command failed, timed out or could not be run."""


def needs_shell(command_line):
    """True if ``command_line`` has shell expansions (``$`` or backquote)."""
    return '$' in command_line or '`' in command_line


def check_shell_line(command_line):
    """Raise ValueError if ``command_line`` is more than words to expand.

    Quotes, ``$(...)``, ``${...}`` and backquotes are followed; outside them
    any of ``; & | < > ( )`` or a newline is an operator and refused.
    """
    depth = 0          # nesting of $( ... ) and ${ ... }
    quote = None
    i = 0
    text = command_line
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = None
        elif c == '\\':
            i += 1
        elif quote == '"':
            if c == '"':
                quote = None
            elif c == '$' and text[i + 1:i + 2] in ('(', '{'):
                depth += 1
                i += 1
            elif c in ')}' and depth:
                depth -= 1
        elif quote == '`':
            if c == '`':
                quote = None
        elif c in '\'"`':
            quote = c
        elif c == '$' and text[i + 1:i + 2] in ('(', '{'):
            depth += 1
            i += 1
        elif c in ')}' and depth:
            depth -= 1
        elif not depth and (c in ';&|<>()' or c == '\n'):
            raise ValueError('shell operator %r outside an expansion: a '
                             'command line must be one command (use '
                             'expansions like $(cat FILE) only)' % c)
        i += 1
    if quote is not None or depth:
        raise ValueError('unbalanced quotes or $( ) in %r' % command_line)


def split(command_line):
    """Return the argv of a plain command line ([] for an empty one).

    A line with shell expansions is checked but not expanded here: its
    static words are returned as the shell would split them before
    expansion (for display and for checks that only need the program).

    :raises ValueError: the line cannot be parsed.
    """
    command_line = command_line or ''
    if needs_shell(command_line):
        check_shell_line(command_line)
    return shlex.split(command_line)


def expand(command_line, timeout):
    """Return the argv ``/bin/sh`` expands ``command_line`` to.

    Runs as the calling user, with ``timeout``.

    :raises CommandError: the shell failed, timed out or gave no words.
    """
    check_shell_line(command_line)
    proc, out = _run([SHELL, '-c', _PRINT_WORDS + command_line], timeout,
                     'expansion of %r' % command_line, capture_stderr=False)
    if proc.returncode != 0:
        raise CommandError('expansion of %r by %s exited with %d'
                           % (command_line, SHELL, proc.returncode))
    words = out.split(b'\0')[:-1]
    argv = [os.fsdecode(w) for w in words]
    if not argv or not argv[0]:
        raise CommandError('%r expanded to no command' % command_line)
    return argv


class Command:
    """One configured command: ``root_helper + argv``, run with a timeout.

    :param argv: the argv of a plain command line.
    :param line: a command line with shell expansions (then ``argv`` is
        ignored): expanded at every run.
    """

    def __init__(self, name, argv=(), root_helper=(), timeout=30.0,
                 line=None):
        self.name = name
        self.line = line
        self.argv = list(argv) if line is None else []
        self.root_helper = list(root_helper)
        self.timeout = timeout

    @classmethod
    def from_line(cls, name, line, root_helper=(), timeout=30.0):
        """Build from a configured command line (see the module doc).

        :raises ValueError: the line cannot be parsed or is not one command.
        """
        line = (line or '').strip()
        if line and needs_shell(line):
            check_shell_line(line)
            return cls(name, root_helper=root_helper, timeout=timeout,
                       line=line)
        return cls(name, shlex.split(line), root_helper, timeout)

    def __bool__(self):
        return bool(self.argv) or bool(self.line)

    def spec(self):
        """A JSON-able description (for the guard process)."""
        return {'name': self.name, 'argv': self.argv, 'line': self.line,
                'root_helper': self.root_helper, 'timeout': self.timeout}

    @classmethod
    def from_spec(cls, spec):
        return cls(spec['name'], spec.get('argv') or (),
                   spec.get('root_helper') or (), spec['timeout'],
                   line=spec.get('line'))

    def resolve(self):
        """Return the argv that would run now (expanding if needed).

        :raises CommandError: the expansion failed.
        """
        argv = (expand(self.line, self.timeout) if self.line is not None
                else self.argv)
        return self.root_helper + argv

    def run(self):
        """Run the command; return its combined output.

        Does nothing (returns '') for an empty command.  The child runs in
        its own process group, which is killed as a whole on timeout, so a
        hanging helper cannot outlive it.

        :raises CommandError: non-zero exit, timeout, failed expansion, or
            not executable.
        """
        if not self:
            return ''
        started = time.monotonic()
        argv = self.resolve()
        proc, out = _run(argv, self.timeout, '%s command %s'
                         % (self.name, shlex.join(argv)))
        text = out.decode('utf-8', 'replace').strip()
        if proc.returncode != 0:
            raise CommandError('%s command %s exited with %d: %s'
                               % (self.name, shlex.join(argv),
                                  proc.returncode, text[-500:]))
        LOG.info('%s command %s succeeded in %.2f s', self.name,
                 shlex.join(argv), time.monotonic() - started)
        return text


def _run(argv, timeout, what, capture_stderr=True):
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if capture_stderr else subprocess.PIPE,
            start_new_session=True)
    except OSError as exc:
        raise CommandError('%s could not be run: %s'
                           % (what, exc.strerror)) from exc
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise CommandError('%s timed out after %.1f s'
                           % (what, timeout)) from None
    return proc, out


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
        self.start = _command('start', start, root_helper, timeout)
        self.stop = _command('stop', stop, root_helper, timeout)
        self.reload = _command('reload', reload, root_helper, timeout)

    @classmethod
    def from_conf(cls, conf):
        """Build from ``conf``; raise ValueError for an unusable line."""
        group = conf.dnsmasq_pxe_filter
        return cls(start=group.dnsmasq_start_command,
                   stop=group.dnsmasq_stop_command,
                   reload=group.dnsmasq_reload_command,
                   root_helper=shlex.split(conf.root_helper or ''),
                   timeout=group.command_timeout)


def _command(name, value, root_helper, timeout):
    if isinstance(value, str):
        return Command.from_line(name, value, root_helper, timeout)
    return Command(name, value, root_helper, timeout)
