"""Sphinx configuration for the jupyter-gpuspawn documentation (built by scripts/docs).

Nothing here reaches the network: no intersphinx, no theme option that fetches, no remote images.
"""

from __future__ import annotations

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(DOCS, "_ext"))
# autodoc documents the package of this working tree, whatever else the environment holds
sys.path.insert(0, os.path.dirname(DOCS))

from jupyter_gpuspawn._version import __version__  # noqa: E402

project = "jupyter-gpuspawn"
author = "jupyter-gpuspawn contributors"
copyright = "jupyter-gpuspawn contributors"
version = release = __version__

extensions = [
    "myst_parser",
    "autodoc_traits",
    "sphinx_copybutton",
    "gpuspawn_docs",  # docs/_ext: configuration, course file and CLI references from the code
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
# `name` in the settings' help text (written for `jupyterhub --help-all` too) is code
default_role = "literal"

# ---- MyST -----------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links, checked like every other reference

# ---- autodoc / autodoc-traits ---------------------------------------------------------------
autodoc_member_order = "alphabetical"  # a reference: looked up by name, as JupyterHub's own

# ---- HTML -----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = "jupyter-gpuspawn"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    # no "edit this page" or source links: the docs are not hosted anywhere yet
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path: list = []
html_show_sourcelink = False
html_copy_source = False
