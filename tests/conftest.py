"""Shared pytest set-up. pytest-jupyter gives the serverext tier a real jupyter_server (jp_fetch)."""
pytest_plugins = ["pytest_jupyter.jupyter_server"]
