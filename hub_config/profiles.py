"""Server profiles: what a user may start (CPU or GPU), for the local spawner and for KubeSpawner alike.

One list, :data:`PROFILES`, says what each profile gives and which hub groups may choose it. GPU profiles are
offered only to the groups in ``CLOUDMRI_GPU_GROUPS`` (default ``admins,gpu-users``), and on a single machine
only when it has a GPU. :func:`profiles_for` filters the list by ``spawner.user.groups``; the local spawner
(:mod:`hub_config.spawner`) renders and enforces it, :func:`kubespawner_profile_list` gives KubeSpawner's
``profile_list`` callable the same choices with Kubernetes resources (``nvidia.com/gpu`` limits, GPU node
selectors, a larger ``/dev/shm``) for the Helm values.

Idle servers stop by themselves after ``idle_timeout`` seconds without activity (the Jupyter server's own
``shutdown_no_activity_timeout``), so a GPU profile can keep a longer timeout than a CPU one; the hub's
``jupyterhub-idle-culler`` service is the backstop at the longest timeout.

References:
    KubeSpawner documentation, ``KubeSpawner.profile_list`` (callable form, ``kubespawner_override``).
    JupyterHub documentation, ``Spawner.options_form`` and ``Spawner.options_from_form``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Minutes of inactivity before a server stops: CPU servers, and GPU servers (scarcer, but jobs run long).
CPU_IDLE_TIMEOUT = int(os.environ.get("CLOUDMRI_IDLE_TIMEOUT", str(60 * 60)))
GPU_IDLE_TIMEOUT = int(os.environ.get("CLOUDMRI_GPU_IDLE_TIMEOUT", str(4 * 60 * 60)))


def gpu_groups() -> frozenset[str]:
    return frozenset(g.strip() for g in os.environ.get("CLOUDMRI_GPU_GROUPS", "admins,gpu-users").split(",")
                     if g.strip())


@dataclass(frozen=True)
class Profile:
    slug: str
    display_name: str
    description: str
    cpus: int
    memory_gib: int
    gpus: int = 0
    idle_timeout: int = CPU_IDLE_TIMEOUT

    @property
    def needs_gpu(self) -> bool:
        return self.gpus > 0


PROFILES = (
    Profile("cpu-2", "CPU (2 cores)", "2 cores, 8 GiB: notebooks, MRD files, CPU reconstruction.", 2, 8),
    Profile("gpu-1", "GPU (1 GPU, 8 cores)", "1 NVIDIA GPU, 8 cores, 32 GiB: deep learning and fast "
            "iterative reconstruction.", 8, 32, gpus=1, idle_timeout=GPU_IDLE_TIMEOUT),
)


def local_gpus() -> int:
    """GPUs this machine has (``CLOUDMRI_LOCAL_GPUS`` overrides the count of /dev/nvidiaN devices)."""
    if "CLOUDMRI_LOCAL_GPUS" in os.environ:
        return int(os.environ["CLOUDMRI_LOCAL_GPUS"])
    return sum(1 for path in Path("/dev").glob("nvidia[0-9]*"))


def profiles_for(groups: set[str] | frozenset[str], gpus_available: bool = True) -> list[Profile]:
    """The profiles a member of ``groups`` may start; GPU ones only for GPU groups, and only where GPUs exist."""
    allowed_gpu = bool(set(groups) & gpu_groups()) and gpus_available
    return [profile for profile in PROFILES if allowed_gpu or not profile.needs_gpu]


def kubespawner_profile_list(spawner) -> list[dict]:
    """``c.KubeSpawner.profile_list``: the same profiles as Kubernetes resources, filtered by the user's groups.

    GPU profiles request ``nvidia.com/gpu`` and run on nodes labelled ``cloudmri.org/gpu=true`` (tolerating the
    usual ``nvidia.com/gpu`` taint); every profile mounts a memory-backed ``/dev/shm`` (PyTorch data loaders
    and Dask workers need more than the container default of 64 MiB).
    """
    groups = {group.name for group in spawner.user.groups}
    choices = []
    for number, profile in enumerate(profiles_for(groups)):
        override: dict = {
            "cpu_guarantee": profile.cpus / 2, "cpu_limit": profile.cpus,
            "mem_guarantee": f"{profile.memory_gib // 2}G", "mem_limit": f"{profile.memory_gib}G",
            "volumes": [{"name": "dshm",
                         "emptyDir": {"medium": "Memory", "sizeLimit": f"{profile.memory_gib // 2}Gi"}}],
            "volume_mounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
            "environment": {"CLOUDMRI_PROFILE": profile.slug},
            "args": server_args(profile),
        }
        if profile.needs_gpu:
            override.update({
                "extra_resource_limits": {"nvidia.com/gpu": str(profile.gpus)},
                "node_selector": {"cloudmri.org/gpu": "true"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            })
        choices.append({"display_name": profile.display_name, "slug": profile.slug,
                        "description": profile.description, "default": number == 0,
                        "kubespawner_override": override})
    return choices


def server_args(profile: Profile) -> list[str]:
    """Jupyter server arguments of a profile: stop after its idle timeout, cull idle kernels sooner."""
    return [f"--ServerApp.shutdown_no_activity_timeout={profile.idle_timeout}",
            f"--MappingKernelManager.cull_idle_timeout={profile.idle_timeout}",
            "--MappingKernelManager.cull_interval=300"]
