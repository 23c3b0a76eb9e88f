"""The admin guide keeps up with the code: options, SIGHUP, log lines."""

import ast
import pathlib
import re

import pytest

from pxefilterd.conf import ironic as ironic_conf
from pxefilterd.conf import opts

REPO = pathlib.Path(__file__).resolve().parents[2]
GUIDE = REPO / 'doc' / 'source' / 'admin-guide.md'
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


def _generator_namespaces():
    conf = (REPO / 'etc' / 'pxefilterd' / 'config-generator.conf')
    return [line.split('=', 1)[1].strip()
            for line in conf.read_text().splitlines()
            if line.replace(' ', '').startswith('namespace=')]


def test_every_option_has_help_text():
    # The configuration reference (doc/source/configuration) and the sample
    # file are generated from the help texts: an option without one would
    # be listed there with nothing to say what it does.
    missing = ['[%s] %s' % (group, opt.dest)
               for group, group_opts in opts.list_opts()
               for opt in group_opts
               if not (opt.help or '').strip()]
    assert not missing, 'options without help text: %s' % ', '.join(missing)


def test_the_reference_shows_what_the_generator_lists():
    # One list of namespaces for the sample file and the reference, and
    # each an entry point of the installed distribution (setup.cfg).
    from importlib import metadata
    page = (REPO / 'doc' / 'source' / 'configuration' / 'index.rst'
            ).read_text()
    directive = page[page.index('.. show-options::'):]
    shown = [line.strip() for line in directive.splitlines()[1:]
             if line.strip()]
    assert shown == _generator_namespaces()
    points = {ep.name: ep for ep in
              metadata.entry_points(group='oslo.config.opts')}
    for name in shown:
        assert points[name].load()(), name


def test_the_reference_builds(tmp_path):
    """The configuration reference page, built by Sphinx with
    oslo_config.sphinxext as tox -e docs builds it (warnings are errors),
    names every pxefilterd option and marks the mutable ones."""
    pytest.importorskip('sphinx', reason='the doc requirements '
                        '(doc/requirements.txt) are not installed')
    import io

    from sphinx.application import Sphinx
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'conf.py').write_text("extensions = ['oslo_config.sphinxext']\n")
    (src / 'index.rst').write_text(
        (REPO / 'doc' / 'source' / 'configuration' / 'index.rst')
        .read_text().replace(':doc:', ':literal:'))
    out = tmp_path / 'out'
    warnings = io.StringIO()
    app = Sphinx(str(src), str(src), str(out), str(tmp_path / 'doctrees'),
                 'text', warningiserror=True, status=None,
                 warning=warnings, freshenv=True)
    app.build()
    # e.g. a help text that is not valid reStructuredText
    assert not warnings.getvalue(), warnings.getvalue()
    assert app.statuscode == 0
    text = (out / 'index.txt').read_text()
    for group, group_opts in opts.list_opts():
        heading = '\n%s\n%s\n' % (group, '=' * len(group))
        assert heading in text, group
        section = text[text.index(heading):]
        for opt in group_opts:
            assert '\n%s\n\n   Type:' % opt.dest in section, (group,
                                                                opt.dest)
    mutable = sum(1 for _g, group_opts in opts.list_opts()
                  for o in group_opts if o.mutable)
    assert text.count('can be changed without restarting') >= mutable


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
        'log messages not explained in doc/source/admin-guide.md section 11:\n'
        + '\n'.join(missing))


def test_sudoers_example(guide):
    assert ('pxefilterd ALL = (root) NOPASSWD: '
            '/usr/local/bin/pxefilterd-rootwrap '
            '/etc/pxefilterd/rootwrap.conf *') in guide


def test_the_ctl_man_page_names_every_command_and_option():
    # doc/source/cli/pxefilterd-ctl.rst is also pxefilterd-ctl(8).
    import argparse

    from pxefilterd.cmd import ctl
    page = (REPO / 'doc' / 'source' / 'cli' / 'pxefilterd-ctl.rst'
            ).read_text()
    parser = argparse.ArgumentParser()
    ctl._add_parsers(parser.add_subparsers())
    commands = parser._subparsers._group_actions[0].choices
    assert len(commands) >= 4
    missing = []
    for name, sub in commands.items():
        if '\n%s' % name not in page:
            missing.append(name)
        for action in sub._actions:
            missing.extend('%s %s' % (name, flag)
                           for flag in action.option_strings
                           if flag not in ('-h', '--help')
                           and flag not in page)
    # oslo.config's own --shell_completion is left out: its templates are
    # missing from the oslo.config wheel (FileNotFoundError when used).
    for opt in ctl.new_conf()._opts.values():
        if (opt['cli']
                and opt['opt'].name not in ('command', 'shell_completion')):
            if '--%s' % opt['opt'].name not in page:
                missing.append('--%s' % opt['opt'].name)
    assert not missing, 'not in pxefilterd-ctl(8): %s' % ', '.join(missing)
