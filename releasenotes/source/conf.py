"""Sphinx configuration of the pxefilterd release notes
(tox -e releasenotes): reno turns releasenotes/notes/*.yaml and the git
tags into one page per release."""

project = 'pxefilterd release notes'
copyright = 'pxefilterd developers'
author = 'pxefilterd developers'
extensions = ['reno.sphinxext']
root_doc = 'index'
exclude_patterns = ['_build']
html_theme = 'alabaster'
