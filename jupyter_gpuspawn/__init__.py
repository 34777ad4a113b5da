"""jupyter-gpuspawn: a JupyterHub spawner for shared GPU servers.

This module imports nothing heavy: the package is installed both on the hub (where docker and pynvml
are used) and inside user images (where only the status server extension runs).
"""

from ._version import __version__

__all__ = ["__version__", "GPUDockerSpawner", "GPUSwarmSpawner"]


def _jupyter_server_extension_points():
    return [{"module": "jupyter_gpuspawn.status"}]


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "jupyter-gpuspawn"}]


def __getattr__(name):
    # Lazy, so `import jupyter_gpuspawn` never imports dockerspawner/docker inside user images.
    if name == "GPUDockerSpawner":
        from .spawner import GPUDockerSpawner

        return GPUDockerSpawner
    if name == "GPUSwarmSpawner":
        from .swarmspawner import GPUSwarmSpawner

        return GPUSwarmSpawner
    raise AttributeError(name)
