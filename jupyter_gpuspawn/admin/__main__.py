"""Run the GPU admin page as a JupyterHub service: python -m jupyter_gpuspawn.admin -f jupyterhub_config.py"""
from __future__ import annotations

import argparse
import asyncio
import os
from urllib.parse import urlparse

from ..hubconfig import runtime_dir, usage_db_url, week_start_spec
from .app import AdminState, make_app


async def serve(args):
    state = AdminState(runtime_dir(args.config), usage_db_url(args.config), week_start_spec(args.config))
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    make_app(state, prefix).listen(url.port or 80, url.hostname or "127.0.0.1")
    await asyncio.Event().wait()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jupyter_gpuspawn.admin", description=__doc__)
    parser.add_argument("-f", "--config", required=True, help="the hub's jupyterhub_config.py")
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
