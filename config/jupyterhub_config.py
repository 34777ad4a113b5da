"""Demo hub: jupyter-gpuspawn with embedded defaults. Started by `scripts/demo`.

- SQLite database, a demo login (any user name; password from GPUSPAWN_DEMO_PASSWORD, default
  "gpuspawn-demo"; user "admin" logs in with the generated password in .demo/admin_password), on
  127.0.0.1:8000 only.
- Real NVIDIA GPUs when a driver answers, otherwise the simulated GPUs in simulated-gpus.yaml (the
  UI says so).
- The locally built image local/gpuspawn-singleuser:latest (no registry needed).
- Three demo courses (demo-courses/: exclusive GPUs, a shared GPU lab, CPU only), open to everyone.
- Homes under GPUSPAWN_DEMO_DIR/home (default: .demo/home in the checkout), owned by uids from
  200000 up.
- Each server on the isolated user network (students cannot reach each other); the hub's API on its
  gateway.
For a production hub start from production_example.py instead.
"""

import os

from jupyter_gpuspawn.network import hub_address

here = os.path.dirname(os.path.abspath(__file__))
demo_dir = os.environ.get("GPUSPAWN_DEMO_DIR", os.path.join(os.path.dirname(here), ".demo"))
os.makedirs(demo_dir, exist_ok=True)

c = get_config()  # noqa: F821

c.JupyterHub.bind_url = os.environ.get("GPUSPAWN_DEMO_URL", "http://127.0.0.1:8000")
# The hub's API where the containers on the user network reach it (the network's gateway), and
# nowhere else.
c.JupyterHub.hub_bind_url = f"http://{hub_address('jupyter-gpuspawn')}:8081"
c.JupyterHub.db_url = f"sqlite:///{demo_dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{demo_dir}/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = f"{demo_dir}/jupyterhub.pid"
c.ConfigurableHTTPProxy.pid_file = f"{demo_dir}/jupyterhub-proxy.pid"
c.JupyterHub.allow_named_servers = True
# named servers must not multiply one student's GPUs: at most 3 servers, 2 GPUs over all of them
c.JupyterHub.named_server_limit_per_user = 3

c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = os.environ.get(
    "GPUSPAWN_DEMO_PASSWORD", "gpuspawn-demo"
)
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {"admin"}


def _admin_password():
    """A random admin password, made once and kept in the demo directory (printed by
    scripts/demo)."""
    path = os.path.join(demo_dir, "admin_password")
    if not os.path.exists(path):
        import secrets

        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(32))
    with open(path) as f:
        return f.read().strip()


c.SharedPasswordAuthenticator.admin_password = _admin_password()

c.JupyterHub.spawner_class = "gpudocker"
c.GPUDockerSpawner.image = os.environ.get(
    "GPUSPAWN_SINGLEUSER_IMAGE", "local/gpuspawn-singleuser:latest"
)
c.GPUDockerSpawner.pull_policy = "never"  # offline-friendly: the image is built locally
# the default: an isolated bridge the spawner creates
c.GPUDockerSpawner.network_name = "jupyter-gpuspawn"
c.GPUDockerSpawner.home_template = f"{demo_dir}/home/{{username}}"
c.GPUDockerSpawner.user_id_source = "range"
c.GPUDockerSpawner.uid_map_file = f"{demo_dir}/uids.json"
c.GPUDockerSpawner.mem_limit = "4G"
c.GPUDockerSpawner.cpu_limit = 2.0
c.GPUDockerSpawner.default_gpus = 0
c.GPUDockerSpawner.max_gpus_per_user = 2
# edit a file: the form changes, no restart
c.GPUDockerSpawner.courses_dir = os.path.join(here, "demo-courses")
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120


def _nvidia_driver_present():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:
        return False


if _nvidia_driver_present():
    c.GPUDockerSpawner.gpu_inventory = "nvml"
else:
    c.GPUDockerSpawner.gpu_inventory = "simulated"
    c.GPUDockerSpawner.simulated_gpus = os.path.join(here, "simulated-gpus.yaml")
