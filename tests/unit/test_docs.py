"""The admin guide keeps up with the code: options, SIGHUP, log lines."""

import ast
import pathlib
import re

import pytest

from pxefilterd.conf import ironic as ironic_conf
from pxefilterd.conf import opts

REPO = pathlib.Path(__file__).resolve().parents[2]
GUIDE = REPO / 'doc' / 'admin-guide.md'
_PLACEHOLDER = re.compile(r'%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[a-zA-Z%]')


@pytest.fixture(scope='module')
def guide():
    # One space for any run of whitespace: messages may wrap in the guide.
    return ' '.join(GUIDE.read_text().split())


def own_options():
    own_ironic = {o.dest for o in ironic_conf.opts}
    for group, group_opts in opts.list_opts():
        for opt in group_opts:
            if group == 'ironic' and opt.dest not in own_ironic:
                continue   # keystoneauth's: listed by name in prose
            yield group, opt


def section(guide, title):
    start = guide.index(title)
    end = guide.index(' ## ', start)
    return guide[start:end]


def test_every_option_is_in_the_reference(guide):
    reference = section(guide, '## 8. Configuration reference')
    missing = []
    for group, opt in own_options():
        header = '### [%s]' % group
        start = reference.index(header)
        end = reference.find('### [', start + len(header))
        if '`%s`' % opt.dest not in reference[start:end if end > 0 else None]:
            missing.append('[%s] %s' % (group, opt.dest))
    assert not missing, 'options missing from doc/admin-guide.md: %s' % (
        ', '.join(missing))


def test_every_mutable_option_is_in_the_sighup_section(guide):
    sighup = section(guide, '## 9. Reloading the configuration (SIGHUP)')
    missing = ['[%s] %s' % (g, o.dest) for g, o in own_options()
               if o.mutable and '`%s`' % o.dest not in sighup]
    assert not missing, missing
    # and nothing listed there that is not mutable
    immutable = {o.dest for g, o in own_options() if not o.mutable}
    listed = set(re.findall(r'`([a-z_]+)`', sighup.split('A full sync')[0]))
    assert not listed & immutable, listed & immutable


def log_messages():
    """Yield (file, message) for every WARNING/ERROR the daemon can log."""
    for path in sorted((REPO / 'pxefilterd').rglob('*.py')):
        if 'testing' in path.parts or path.name == 'ctl.py':
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            is_log = (isinstance(func, ast.Attribute)
                      and func.attr in ('warning', 'error', 'exception',
                                        'critical')
                      and isinstance(func.value, ast.Name)
                      and func.value.id == 'LOG')
            is_guard = isinstance(func, ast.Name) and func.id == '_log'
            if not (is_log or is_guard):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.BinOp):   # '...' % (...)
                arg = arg.left
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield path.name, arg.value


def test_every_warning_and_error_is_explained(guide):
    messages = list(log_messages())
    assert len(messages) > 20
    missing = []
    for name, message in messages:
        chunks = [c.strip(' :;,.') for c in _PLACEHOLDER.split(message)]
        longest = max(chunks, key=len)
        if longest and ' '.join(longest.split()) not in guide:
            missing.append('%s: %r' % (name, message))
    assert not missing, (
        'log messages not explained in doc/admin-guide.md section 11:\n'
        + '\n'.join(missing))


def test_sudoers_example(guide):
    assert ('pxefilterd ALL = (root) NOPASSWD: '
            '/usr/local/bin/pxefilterd-rootwrap '
            '/etc/pxefilterd/rootwrap.conf *') in guide
