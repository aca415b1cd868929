"""Profiles and account names, without a hub (the real spawns are in test_spawn.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from traitlets import HasTraits

from hub_config.profiles import CPU_IDLE_TIMEOUT, GPU_IDLE_TIMEOUT, kubespawner_profile_list, profiles_for
from hub_config.spawner import VALID, system_name


def _spawner(*groups: str):
    return SimpleNamespace(user=SimpleNamespace(groups=[SimpleNamespace(name=g) for g in groups]))


def test_gpu_profiles_only_for_gpu_groups_and_only_where_gpus_exist():
    assert [p.slug for p in profiles_for({"researchers"})] == ["cpu-2"]
    assert [p.slug for p in profiles_for({"researchers", "gpu-users"})] == ["cpu-2", "gpu-1"]
    assert [p.slug for p in profiles_for({"admins"})] == ["cpu-2", "gpu-1"]
    assert [p.slug for p in profiles_for({"admins"}, gpus_available=False)] == ["cpu-2"]


def test_the_gpu_groups_are_a_setting(monkeypatch):
    monkeypatch.setenv("CLOUDMRI_GPU_GROUPS", "deep-learning")
    assert [p.slug for p in profiles_for({"admins"})] == ["cpu-2"]
    assert [p.slug for p in profiles_for({"deep-learning"})] == ["cpu-2", "gpu-1"]


def test_kubespawner_profiles_request_gpus_shm_and_the_idle_timeouts():
    assert [p["slug"] for p in kubespawner_profile_list(_spawner("radiologists"))] == ["cpu-2"]
    cpu, gpu = kubespawner_profile_list(_spawner("gpu-users"))
    assert cpu["default"] and not gpu["default"]
    assert "extra_resource_limits" not in cpu["kubespawner_override"]
    override = gpu["kubespawner_override"]
    assert override["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert override["node_selector"] == {"cloudmri.org/gpu": "true"}
    assert override["volume_mounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert override["volumes"][0]["emptyDir"]["medium"] == "Memory"
    assert f"--ServerApp.shutdown_no_activity_timeout={GPU_IDLE_TIMEOUT}" in override["args"]
    assert f"--ServerApp.shutdown_no_activity_timeout={CPU_IDLE_TIMEOUT}" in cpu["kubespawner_override"]["args"]
    assert GPU_IDLE_TIMEOUT > CPU_IDLE_TIMEOUT


def test_account_names_are_valid_distinct_and_short():
    assert system_name("alice") == "cm-alice"
    names = {system_name(n) for n in ("Alice", "alice", "a.lice@example.org", "x" * 40, "élise", "-x")}
    assert len(names) == 6
    for name in names:
        assert VALID.fullmatch(name) and len(name) <= 32, name


def test_every_kubespawner_override_is_a_valid_kubespawner_setting():
    """KubeSpawner applies overrides with setattr: a misspelt key would be silently ignored (no pod GPU)."""
    kubespawner = pytest.importorskip("kubespawner", reason="jupyterhub-kubespawner is a dev dependency")
    traits, holder = kubespawner.KubeSpawner.class_traits(), HasTraits()
    for profile in kubespawner_profile_list(_spawner("admins")):
        for key, value in profile["kubespawner_override"].items():
            assert key in traits, key
            traits[key].validate(holder, value)  # raises TraitError for a value of the wrong kind
