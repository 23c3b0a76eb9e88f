"""Sphinx configuration of the pxefilterd documentation (tox -e docs).

The pages are Markdown (myst-parser) and reStructuredText; the
configuration reference and the sample file are generated from the option
definitions by oslo.config's Sphinx extensions, and the CLI pages are also
the man pages (``sphinx-build -b man``).
"""

import os

import pbr.version

project = 'pxefilterd'
copyright = 'pxefilterd developers'
author = 'pxefilterd developers'
release = pbr.version.VersionInfo('pxefilterd').release_string()
version = pbr.version.VersionInfo('pxefilterd').version_string()

extensions = [
    'myst_parser',
    'oslo_config.sphinxext',
    'oslo_config.sphinxconfiggen',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build']
# GitHub-style anchors for the "#8-configuration-reference" links the
# Markdown pages use between their own sections.
myst_heading_anchors = 3

# oslo_config.sphinxconfiggen: the sample file, from the same generator
# configuration as etc/pxefilterd/pxefilterd.conf.sample (tox -e genconfig);
# written to _static/pxefilterd.conf.sample at every build.
config_generator_config_file = [
    ('../../etc/pxefilterd/config-generator.conf', '_static/pxefilterd'),
]

html_theme = 'alabaster'
# _static holds only what the build generates (ignored by git), so a fresh
# clone has none; Sphinx checks html_static_path before the generator runs.
os.makedirs(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         '_static'), exist_ok=True)
html_static_path = ['_static']

# (source page, name, description, authors, section)
man_pages = [
    ('cli/pxefilterd', 'pxefilterd',
     'the ironic PXE filter daemon for an inspection dnsmasq',
     [author], 8),
    ('cli/pxefilterd-ctl', 'pxefilterd-ctl',
     'look at and act on a pxefilterd hostsdir', [author], 8),
]
man_show_urls = True
