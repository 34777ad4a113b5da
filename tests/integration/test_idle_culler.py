"""The real jupyterhub-idle-culler against a real hub: busy GPUs keep a server, idle ones do not
save it."""

from __future__ import annotations

import json
import time

from .hub import simulated_gpus, wait_until

CULLER = """
import sys
c.JupyterHub.services += [{"name": "idle-culler",
                           "command": [sys.executable, "-m", "jupyterhub_idle_culler",
                                       "--timeout=12", "--cull-every=3"]}]
c.JupyterHub.load_roles += [{"name": "idle-culler", "services": ["idle-culler"],
                             "scopes": ["list:users", "read:users:activity", "read:servers",
                                        "delete:servers"]}]
# short intervals for a test: the server reports its activity every 2 s and looks at its GPUs
# every second
c.Spawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": "2"}
c.Spawner.args = ["--GPUActivity.interval=1"]
"""


def test_the_culler_spares_a_busy_gpu_and_culls_it_once_idle(make_hub):
    gpus = simulated_gpus(2)
    gpus[0]["utilization"], gpus[1]["utilization"] = 0, 0
    hub = make_hub(gpus=gpus, extra_config=CULLER)
    hub.create_users("trainer", "leftopen")
    hub.spawn_ready("trainer", {"gpus": 1})
    hub.spawn_ready("leftopen", {"gpus": 1})
    trainer_gpu = hub.session.get(hub.user_url("trainer") + "gpuspawn/status").json()["gpus"][0][
        "uuid"
    ]
    # the trainer's GPU gets busy (a training run); every browser tab is closed: nobody touches
    # either server
    for gpu in gpus:
        gpu["utilization"] = 90 if gpu["uuid"] == trainer_gpu else 0
    # in place: the containers see the file through a bind mount
    with open(hub.gpus_file, "w") as f:
        json.dump(gpus, f)
    wait_until(
        lambda: hub.server("leftopen") is None,
        60,
        f"the idle server was never culled\n{hub.log_tail()}",
    )
    culled_at = time.monotonic()
    time.sleep(8)
    assert hub.server("trainer") is not None, (
        f"a server with a busy GPU was culled\n{hub.log_tail()}"
    )
    assert time.monotonic() - culled_at >= 8
    # the run ends: now idle in every sense, it goes too
    for gpu in gpus:
        gpu["utilization"] = 0
    with open(hub.gpus_file, "w") as f:
        json.dump(gpus, f)
    wait_until(
        lambda: hub.server("trainer") is None,
        60,
        f"the idle trainer was never culled\n{hub.log_tail()}",
    )
