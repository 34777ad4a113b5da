"""A real JupyterHub (subprocess) with a real configurable-http-proxy and GPUDockerSpawner, driven
by its REST API."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time

import requests

CACHE = os.environ.get("GPUSPAWN_CACHE", "/var/cache/jupyter-gpuspawn")
TEST_IMAGE = os.environ.get("GPUSPAWN_SINGLEUSER_IMAGE", "local/gpuspawn-singleuser:latest")
CONTAINER_PREFIX = "gpuspawn-test"
TEST_NETWORK = "gpuspawn-test-net"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout, what):
    """Poll ``check()`` until it returns something true (returned), or fail after ``timeout``
    seconds with ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def simulated_gpus(n: int, name="NVIDIA A100 80GB PCIe (simulated)") -> list:
    return [
        {
            "uuid": f"GPU-{i:08x}-5eed-4a11-9b00-{secrets.token_hex(6)}",
            "name": name,
            "memory_total": "80GiB",
        }
        for i in range(n)
    ]


class Hub:
    """One hub: its own directory (db, config, homes), ports, proxy token; can be killed and
    restarted."""

    def __init__(
        self,
        workdir,
        gpus: list,
        extra_config: str = "",
        spawner_class="gpudocker",
        fixed_hub_address: bool = False,
    ):
        """``fixed_hub_address``: the config names the hub's address itself, as many hand-written
        configs do, instead of asking Docker for it at start (a hub that then starts without
        Docker)."""
        self.dir = str(workdir)
        self.fixed_hub_address = fixed_hub_address
        self.port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.token = secrets.token_hex(16)
        self.proxy_token = secrets.token_hex(16)
        self.home_root = os.path.join(self.dir, "home")
        self.gpus_file = os.path.join(self.dir, "gpus.json")
        self.uid_map = os.path.join(self.dir, "uids.json")
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/hub/api"
        self.proc: subprocess.Popen | None = None
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"
        os.makedirs(self.home_root, mode=0o755, exist_ok=True)
        with open(self.gpus_file, "w") as f:
            json.dump(gpus, f)
        self.gpus = gpus
        self.config_file = os.path.join(self.dir, "jupyterhub_config.py")
        with open(self.config_file, "w") as f:
            f.write(self._config(spawner_class) + textwrap.dedent(extra_config))

    def _config(self, spawner_class) -> str:
        from jupyter_gpuspawn.network import hub_address

        chp = os.path.join(CACHE, "node_modules", ".bin", "configurable-http-proxy")
        address = (
            repr(hub_address(TEST_NETWORK, internal=True))
            if self.fixed_hub_address
            else f"hub_address({TEST_NETWORK!r}, internal=True)"
        )
        return f"""
c = get_config()  # noqa
from jupyter_gpuspawn.network import hub_address
c.JupyterHub.bind_url = "http://127.0.0.1:{self.port}"
# the hub's API on the user network's gateway: reachable from the containers, from nothing off
# this host
c.JupyterHub.hub_bind_url = "http://" + {address} + ":{self.hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{self.dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{self.dir}/cookie_secret"
c.JupyterHub.pid_file = "{self.dir}/hub.pid"
c.JupyterHub.cleanup_servers = False
c.JupyterHub.allow_named_servers = True
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "tester", "api_token": "{self.token}"}}]
c.JupyterHub.load_roles = [{{"name": "tester", "services": ["tester"],
    "scopes": ["admin:users", "admin:servers", "admin:groups", "access:servers", "read:users",
               "list:users"]}}]
c.JupyterHub.spawner_class = {spawner_class!r}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60
c.DockerSpawner.image = {TEST_IMAGE!r}
c.DockerSpawner.prefix = "{CONTAINER_PREFIX}"
c.DockerSpawner.remove = True
c.GPUDockerSpawner.network_name = {TEST_NETWORK!r}
c.GPUDockerSpawner.network_internal = True  # test containers get no route off this machine
c.GPUDockerSpawner.gpu_inventory = "simulated"
c.GPUDockerSpawner.simulated_gpus = "{self.gpus_file}"
c.GPUDockerSpawner.home_template = "{self.home_root}/{{username}}"
c.GPUDockerSpawner.user_id_source = "range"
c.GPUDockerSpawner.uid_map_file = "{self.uid_map}"
# refusals are what most tests check; the queue's tests (test_queue.py) turn it on
c.GPUDockerSpawner.gpu_queue_timeout = 0
"""

    @property
    def hub_api(self) -> str:
        """The hub's API where containers on the test network reach it (its gateway)."""
        from jupyter_gpuspawn.network import hub_address

        return f"http://{hub_address(TEST_NETWORK, internal=True)}:{self.hub_port}/hub/api"

    # ---- process ---------------------------------------------------------------------------------
    def start(self, timeout=60):
        env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=self.proxy_token, PYTHONUNBUFFERED="1")
        self.log = open(os.path.join(self.dir, "hub.log"), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", self.config_file],
            cwd=self.dir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.session.get(f"{self.api}/", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"hub did not answer in {timeout}s:\n{self.log_tail()}")

    def kill9(self):
        """SIGKILL the hub only; its proxy and the user containers keep running, as after a
        crash."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        # the proxy is in the hub's session; take it down too
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log_tail(self, n=60) -> str:
        with open(os.path.join(self.dir, "hub.log"), "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")

    # ---- REST API --------------------------------------------------------------------------------
    def create_users(self, *names):
        r = self.session.post(f"{self.api}/users", json={"usernames": list(names)})
        assert r.status_code in (201, 409), r.text

    def spawn(self, user, options=None, server="", raw_body=None):
        """POST the spawn request; returns the response (201 started, 202 pending, 4xx refused)."""
        url = (
            f"{self.api}/users/{user}/servers/{server}"
            if server
            else f"{self.api}/users/{user}/server"
        )
        # the options object itself: the body both JupyterHub 5 and 6 take (6 also takes
        # {"user_options": {...}}, which 5 reads as an option named user_options)
        body = raw_body if raw_body is not None else (options or {})
        return self.session.post(url, data=json.dumps(body), timeout=120)

    def server(self, user, server=""):
        r = self.session.get(f"{self.api}/users/{user}")
        r.raise_for_status()
        return r.json().get("servers", {}).get(server)

    def wait_ready(self, user, server="", timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.server(user, server)
            if info and info.get("ready"):
                return info
            if info is None:
                raise AssertionError(
                    f"{user}/{server} is not running (spawn failed?):\n{self.log_tail()}"
                )
            time.sleep(0.3)
        raise AssertionError(f"{user}/{server} not ready in {timeout}s:\n{self.log_tail()}")

    def spawn_ready(self, user, options=None, server=""):
        r = self.spawn(user, options, server)
        assert r.status_code in (201, 202), f"{r.status_code} {r.text}\n{self.log_tail()}"
        return self.wait_ready(user, server)

    def stop_server(self, user, server="", timeout=60):
        url = (
            f"{self.api}/users/{user}/servers/{server}"
            if server
            else f"{self.api}/users/{user}/server"
        )
        r = self.session.delete(url)
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + timeout
        while self.server(user, server) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{user}/{server} did not stop")
            time.sleep(0.3)

    def progress_events(self, user, server="", timeout=120) -> list:
        """Events of the hub's progress stream (server-sent events) until the spawn ends, as the
        spawn page sees them: one request per spawn, where polling the REST API would cost the hub a
        token check per poll."""
        base = (
            f"{self.api}/users/{user}/servers/{server}"
            if server
            else f"{self.api}/users/{user}/server"
        )
        events = []
        deadline = time.monotonic() + 10
        while True:
            r = self.session.get(f"{base}/progress", stream=True, timeout=timeout)
            # A start refused at once: while the hub cleans up after it (User.stop), the server is
            # neither pending nor failed yet, and the progress API says "not starting" for that
            # moment (JupyterHub 5 and 6 alike); then it sends the failure.
            if r.status_code != 400 or "not starting" not in r.text:
                break
            r.close()
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        with r:
            r.raise_for_status()
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if events[-1].get("ready") or events[-1].get("failed"):
                        break
        return events

    def progress_messages(self, user, timeout=120) -> list:
        return [event.get("message", "") for event in self.progress_events(user, timeout=timeout)]

    def user_url(self, user, server=""):
        return f"{self.url}/user/{user}/{server + '/' if server else ''}"
