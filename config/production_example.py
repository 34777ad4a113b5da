"""Example jupyterhub_config.py for a shared GPU server with jupyter-gpuspawn. Copy, then adapt the
marked lines.

Assumes: hub and user containers on the same host, NVIDIA driver + NVIDIA container toolkit
installed, host accounts through PAM/LDAP (for OAuth logins see the "range" alternative below),
images built with
`jupyter-gpuspawn build-image`.
"""

from jupyter_gpuspawn.network import hub_address

c = get_config()  # noqa: F821

# --- hub ------------------------------------------------------------------------------------------
# ADAPT: behind your TLS terminator, or with ssl_cert/ssl_key
c.JupyterHub.bind_url = "https://0.0.0.0:443"
# Containers run on an isolated Docker bridge ("jupyter-gpuspawn": students cannot reach each
# other's ports); the hub's API listens on that network's gateway address, where containers reach
# it. Keep the subnet fixed so the address survives a re-created network.
c.GPUDockerSpawner.network_name = "jupyter-gpuspawn"
c.GPUDockerSpawner.network_subnet = "10.213.0.0/24"  # ADAPT: a range your site does not route
c.JupyterHub.hub_bind_url = f"http://{hub_address('jupyter-gpuspawn', subnet='10.213.0.0/24')}:8081"
# Offline server or exam: c.GPUDockerSpawner.network_internal = True (no route off the host; pass
# internal=True to hub_address too). It applies when the network is created: an existing network
# without it is refused until you `docker network rm jupyter-gpuspawn`. Host networking
# (network_name = "host") shares the host's loopback between all students: trusted single-user
# hosts only. A hub that itself runs in a container needs host networking and hub_address() too.
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/srv/jupyterhub/jupyterhub_cookie_secret"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 2
# ADAPT: "ldapauthenticator.LDAPAuthenticator", OAuth, …
c.JupyterHub.authenticator_class = "pam"
c.Authenticator.admin_users = {"ADAPT-admin"}
# JupyterHub 5 and 6 let nobody but admins in without an allow rule. ADAPT: the UNIX groups (PAM),
# or c.Authenticator.allowed_users = {...}, or c.Authenticator.allow_all = True
c.PAMAuthenticator.allowed_groups = {"ADAPT-students", "teachers"}

# --- spawner --------------------------------------------------------------------------------------
c.JupyterHub.spawner_class = "gpudocker"
c.GPUDockerSpawner.gpu_inventory = "nvml"  # fail loudly if the driver is missing
c.GPUDockerSpawner.image = "local/pytorch-hub:24.08"  # ADAPT: the default image
# keys users may pick; raw image names are never accepted
c.GPUDockerSpawner.allowed_images = {
    "pytorch": "local/pytorch-hub:24.08",
    "tensorflow": "local/tensorflow-hub:24.08",
    "cpu": "local/scipy-hub:1",
}
# offline server: images are loaded with `docker load`
c.GPUDockerSpawner.pull_policy = "never"
c.GPUDockerSpawner.default_gpus = 0
c.GPUDockerSpawner.gpu_policy = "exclusive"
c.GPUDockerSpawner.max_gpus_per_user = 2
# GPUs used by jobs outside the hub are not handed out
c.GPUDockerSpawner.busy_gpu_memory_threshold = "1G"

# Homes and users: host accounts keep their uid/gid and home.
c.GPUDockerSpawner.user_id_source = "host"
c.GPUDockerSpawner.home_template = "/home/{username}"
c.GPUDockerSpawner.create_home = False  # homes come from your account provisioning
# For OAuth/GitHub logins (no host accounts) instead:
# c.GPUDockerSpawner.user_id_source = "range"
# c.GPUDockerSpawner.uid_range = (200000, 299999)
# c.GPUDockerSpawner.uid_map_file = "/srv/jupyterhub/uids.json"  # default: beside the hub's db
# c.GPUDockerSpawner.home_template = "/srv/jupyter-gpuspawn/homes/{username}"  # never /home
# c.GPUDockerSpawner.create_home = True

# Limits and GPU-container defaults.
c.GPUDockerSpawner.mem_limit = "64G"
c.GPUDockerSpawner.cpu_limit = 8
c.GPUDockerSpawner.shm_size = "8G"
c.GPUDockerSpawner.pids_limit = 8192
c.GPUDockerSpawner.ulimits = {"memlock": -1, "stack": 67108864}  # NVIDIA's advice for NGC images
c.GPUDockerSpawner.volumes = {"/srv/datasets": {"bind": "/datasets", "mode": "ro"}}
# first start of a large NGC image can be slow
c.Spawner.http_timeout = 120
# Leave c.Spawner.start_timeout unset: it counts the wait in the GPU queue too, and its default here
# is gpu_queue_timeout + http_timeout + 90 s (1800 + 120 + 90). A smaller value cuts the queue wait
# to start_timeout - http_timeout - 30 s (300 would leave 150 s of the queue's 30 minutes). If you
# set it, set it to at least gpu_queue_timeout + http_timeout + 90, plus what an image pull takes.

# Idle GPUs come back while others wait (the default); budgets of GPU-hours per student per week and
# course.
c.GPUDockerSpawner.gpu_idle_minutes = 60
# courses may set their own: gpus: {weekly_hours: 10}
c.GPUDockerSpawner.gpu_hours_per_week = 20

# The GPU admin page (Services menu, admins only), the instructors' "My courses" pages, and
# Prometheus on /hub/metrics.
from jupyter_gpuspawn.admin import admin_service, instructor_access_role  # noqa: E402

_service, _role = admin_service(__file__)
# .extend(), not +=: in a fresh config these lists are lazy values that += refuses (TypeError)
c.JupyterHub.services.extend(
    [
        _service,
        {"name": "prometheus", "api_token": "CHANGE-ME: a long random token"},
    ]
)
c.JupyterHub.load_roles.extend(
    [
        _role,
        instructor_access_role(),
        {"name": "prometheus", "services": ["prometheus"], "scopes": ["read:metrics"]},
    ]
)
c.GPUDockerSpawner.course_creator_groups = ["teachers"]
c.GPUDockerSpawner.instructor_limits = {
    "max_gpus": 2,
    "max_mem_limit": "32G",
    "max_weekly_hours": 20,
}
