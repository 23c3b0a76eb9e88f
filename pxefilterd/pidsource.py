"""Where dnsmasq's pid file is: read from what the operator configured.

Supervision needs to see whether dnsmasq runs, and the one cheap, command-free
way is its pid file.  Operators rarely set ``[dnsmasq_pxe_filter]
dnsmasq_pid_file`` (the specification never names it), but the commands they
do set nearly always say where it is.  :func:`derive` looks, in this order:

1. ``dnsmasq_pid_file`` itself (it always wins);
2. the dnsmasq argv of the start command -- ``--pid-file=FILE``, ``-x FILE``,
   ``-xFILE`` -- or the ``pid-file=`` line of its ``--conf-file=FILE`` /
   ``-C FILE`` file.  When the start command is ``systemctl start UNIT``, the
   unit's own ExecStart (asked of systemd once, by the caller) stands in for
   the argv;
3. the stop or reload command's ``$(cat FILE)`` / backquoted ``cat FILE``,
   or ``pkill -F FILE`` / ``--pidfile FILE``.

Pure apart from reading the files it is handed through ``read_text``;
nothing here runs a command.  :func:`check_dnsmasq_argv` tells which words
of a dnsmasq argv dnsmasq itself will refuse.
"""

import dataclasses
import os
import re
import shlex
import typing

OPTION = '[dnsmasq_pxe_filter] dnsmasq_pid_file'

# dnsmasq's long options whose argument is optional (getopt_long has_arg 2)
# and that 2.90 refuses with their value as a separate word (measured with
# "dnsmasq --test"): only --opt=VALUE gives them a value; "--conf-file FILE"
# leaves FILE a stray word, and dnsmasq exits with "junk found in command
# line".
_REFUSES_SEPARATE_WORD = frozenset((
    'conf-file', 'pid-file', 'user', 'group', 'dhcp-leasefile', 'conf-dir',
    'resolv-file', 'cache-size', 'log-queries'))

_CAT = re.compile(r'\$\(\s*cat\s+([^\s)]+)\s*\)|`\s*cat\s+([^\s`]+)\s*`')


@dataclasses.dataclass(frozen=True)
class Source:
    """Where dnsmasq's pid comes from.

    :ivar path: the pid file, or None when nothing says where it is.
    :ivar origin: one line: which setting named it, or why none did.
    """

    path: typing.Optional[str]
    origin: str

    @property
    def observed(self):
        return self.path is not None


def _read(path):
    with open(path, encoding='utf-8', errors='replace') as f:
        return f.read(1 << 20)


def dnsmasq_argv(words):
    """The part of ``words`` that is dnsmasq's own argv (from the word whose
    basename is ``dnsmasq``), or None: start commands are often wrapped
    (``ip netns exec NS dnsmasq ...``, ``sudo dnsmasq ...``)."""
    for i, word in enumerate(words):
        if os.path.basename(word) == 'dnsmasq':
            return words[i:]
    return None


def _option_values(argv, long_name, short):
    """Values given to ``--long_name=V``, ``-s V`` or ``-sV`` in a dnsmasq
    argv, in order."""
    values = []
    args = iter(argv[1:])
    for word in args:
        if word.startswith('--%s=' % long_name):
            values.append(word.split('=', 1)[1])
        elif word == '-' + short:
            values.append(next(args, ''))
        elif word.startswith('-' + short) and not word.startswith('--'):
            values.append(word[2:])
    return values


def _conf_file_pid(path, read_text):
    """The last ``pid-file=`` of a dnsmasq configuration file, or None."""
    try:
        text = read_text(path)
    except OSError:
        return None
    found = None
    for raw in text.splitlines():
        line = raw.split('#', 1)[0].strip()
        key, sep, value = line.partition('=')
        if sep and key.strip() == 'pid-file' and value.strip():
            found = value.strip()
    return found


def from_dnsmasq_argv(argv, read_text=_read, what='the start command'):
    """A :class:`Source` from a dnsmasq argv, or None."""
    for value in reversed(_option_values(argv, 'pid-file', 'x')):
        if value:
            return Source(value, '--pid-file of %s' % what)
    for conf in reversed(_option_values(argv, 'conf-file', 'C')):
        pid = _conf_file_pid(conf, read_text) if conf else None
        if pid:
            return Source(pid, 'pid-file= in %s (the --conf-file of %s)'
                          % (conf, what))
    return None


def systemctl_unit(words):
    """``UNIT`` if ``words`` is ``systemctl [options] start UNIT``."""
    if not words or os.path.basename(words[0]) != 'systemctl':
        return None
    rest = [w for w in words[1:] if not w.startswith('-')]
    if len(rest) == 2 and rest[0] in ('start', 'restart'):
        return rest[1]
    return None


def exec_start_argv(show_output):
    """The argv of a unit's ExecStart from ``systemctl show -p ExecStart
    --value UNIT`` output (``{ path=... ; argv[]=WORDS ; ... }``)."""
    match = re.search(r'argv\[\]=(.*?) ;', show_output)
    if not match:
        return None
    try:
        return shlex.split(match.group(1))
    except ValueError:
        return None


def _split(line):
    try:
        return shlex.split(line or '')
    except ValueError:
        return []


def _from_other_command(line):
    match = _CAT.search(line or '')
    if match:
        return match.group(1) or match.group(2)
    words = _split(line)
    if words and os.path.basename(words[0]) == 'pkill':
        values = _option_values(['pkill'] + words[1:], 'pidfile', 'F')
        if values and values[-1]:
            return values[-1]
    return None


def derive(pid_file='', start='', stop='', reload='', read_text=_read,
           unit_argv=None):
    """Return the :class:`Source` of dnsmasq's pid, or why there is none.

    :param pid_file: ``[dnsmasq_pxe_filter] dnsmasq_pid_file``.
    :param start, stop, reload: the three command lines as configured.
    :param read_text: callable(path) returning a file's text (raising
        OSError), for the start command's ``--conf-file``.
    :param unit_argv: when ``start`` is ``systemctl start UNIT``: callable(
        UNIT) returning that unit's ExecStart argv, or None if unknown.
    """
    if pid_file:
        return Source(pid_file, OPTION)
    words = _split(start)
    argv = dnsmasq_argv(words)
    if argv is not None:
        found = from_dnsmasq_argv(argv, read_text)
        if found:
            return found
    unit = systemctl_unit(words)
    if unit and unit_argv is not None:
        argv = dnsmasq_argv(unit_argv(unit) or [])
        if argv is not None:
            found = from_dnsmasq_argv(argv, read_text,
                                      'the ExecStart of %s' % unit)
            if found:
                return found
    for name, line in (('stop', stop), ('reload', reload)):
        path = _from_other_command(line)
        if path:
            return Source(path, 'the pid file the %s command reads' % name)
    if not start:
        why = 'no dnsmasq_start_command, and no pid file in the others'
    elif unit:
        why = 'the ExecStart of %s names no pid file' % unit
    else:
        why = 'none of the dnsmasq commands names a pid file'
    return Source(None, 'dnsmasq is not observed: %s; set %s' % (why, OPTION))


def check_dnsmasq_argv(argv):
    """Return one line per word of a dnsmasq argv that dnsmasq will refuse
    (an option with an optional argument given its value as a separate
    word), saying what to write instead."""
    problems = []
    for word, following in zip(argv[1:], argv[2:] + [None]):
        name = word[2:] if word.startswith('--') else None
        if (name in _REFUSES_SEPARATE_WORD and following is not None
                and not following.startswith('-')):
            problems.append(
                'dnsmasq takes "%s %s" as "%s" with no value and a stray '
                'word, and exits with "junk found in command line": write '
                '%s=%s' % (word, following, word, word, following))
    return problems
