"""Installing the Cloud-MRI kernelspec: where it goes and what it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cloudmri_jupyter.install_kernel import KERNEL_NAME, install_kernel, main
from jupyter_client.kernelspec import KernelSpecManager

from tests.extensions.conftest import with_extensions_path


def installed_spec(kernels_dir):
    return KernelSpecManager(kernel_dirs=[str(kernels_dir)], ensure_native_kernel=False).get_kernel_spec(KERNEL_NAME)


def test_install_into_a_prefix_runs_this_python_with_cloudmri_kernel_imported(tmp_path):
    path = install_kernel(prefix=tmp_path)
    assert path == tmp_path / "share" / "jupyter" / "kernels" / "cloudmri"
    spec = installed_spec(path.parent)
    assert spec.display_name == "Cloud-MRI (Python 3)" and spec.language == "python"
    assert spec.argv == [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                         "--IPKernelApp.exec_lines=import cloudmri_kernel as cm"]
    assert (path / "logo-svg.svg").read_text().startswith("<svg")


def test_install_again_replaces_with_another_python(tmp_path):
    install_kernel(prefix=tmp_path)
    path = install_kernel(prefix=tmp_path, python="/opt/envs/mri/bin/python")
    assert json.loads((path / "kernel.json").read_text())["argv"][0] == "/opt/envs/mri/bin/python"


def test_a_prefix_and_the_user_directory_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        install_kernel(prefix=tmp_path, user=True)
    with pytest.raises(SystemExit) as exit_:
        main(["--prefix", str(tmp_path), "--user"])
    assert exit_.value.code == 2


def test_cli_installs_for_the_user(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    assert main(["--user"]) == 0
    assert installed_spec(tmp_path / "data" / "kernels").argv[0] == sys.executable
    assert capsys.readouterr().out == f"installed the Cloud-MRI kernel (cloudmri) in {tmp_path}/data/kernels/cloudmri\n"


def test_cli_says_what_to_do_when_the_kernel_directory_cannot_be_written(tmp_path, capsys):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    assert main(["--prefix", str(not_a_directory)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("cannot write the kernelspec (") and "choose a writable place with --prefix" in error


def test_python_dash_m_installs_into_a_prefix(tmp_path):
    env = with_extensions_path(dict(os.environ))
    result = subprocess.run([sys.executable, "-m", "cloudmri_jupyter.install_kernel", "--prefix", str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert installed_spec(tmp_path / "share" / "jupyter" / "kernels").display_name == "Cloud-MRI (Python 3)"
