"""The Cloud-MRI kernel as users get it: installed kernelspec, a real ipykernel process, the real service."""

from __future__ import annotations

import pytest
from cloudmri_jupyter.install_kernel import KERNEL_NAME, install_kernel
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from cloudmri_kernel.client import Client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kernel(service, phantom_mrd, tmp_path_factory):
    """A client of a started Cloud-MRI kernel whose environment is alice's, after alice uploaded one dataset."""
    with Client(service.service.url, service.token) as direct:
        direct.upload(phantom_mrd)
    prefix = tmp_path_factory.mktemp("prefix")
    install_kernel(prefix=prefix)
    specs = KernelSpecManager(kernel_dirs=[str(prefix / "share" / "jupyter" / "kernels")], ensure_native_kernel=False)
    manager = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)
    manager.start_kernel(env=service.env)
    try:
        client = manager.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=120)
            yield client
        finally:
            client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)


def run(client, code: str) -> str:
    """Execute ``code`` in the kernel; what it printed. Fails the test on an error, with the kernel's traceback."""
    printed, errors = [], []

    def collect(message: dict) -> None:
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            errors.append("\n".join(message["content"]["traceback"]))

    reply = client.execute_interactive(code, timeout=120, output_hook=collect)
    assert reply["content"]["status"] == "ok", "\n".join(errors)
    return "".join(printed)


def test_a_fresh_kernel_reaches_the_service_as_its_user(kernel):
    code = "import cloudmri_kernel.notebook\nprint(len(cm.notebook.datasets()), cm.notebook.whoami()['user'])"
    assert run(kernel, code) == "1 alice\n"  # `cm` was imported at startup


def test_the_package_forwards_the_notebook_functions(kernel):
    assert run(kernel, "print(len(cm.datasets()), cm.whoami()['site'])") == "1 siteA\n"
