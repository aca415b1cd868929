"""A real anvil node per test (its state in the test's directory) and a deployed consortium admin ledger."""

from __future__ import annotations

import pytest

from cloudmri_kernel.ledger.testing import ledger_for, start_node


@pytest.fixture
def node(tmp_path):
    chain = start_node(tmp_path / "node")
    yield chain
    chain.kill()


@pytest.fixture
def admin(node, tmp_path):
    """The consortium admin, who is also the site "charite", on a freshly deployed pair of contracts."""
    ledger = ledger_for(tmp_path / "admin", node.url, batch_size=4)
    ledger.deploy("charite")
    yield ledger
    ledger.close()


@pytest.fixture
def site(admin, node, tmp_path):
    """A second site, "uke", registered by the admin and using the same contracts."""
    ledger = ledger_for(tmp_path / "uke", node.url)
    ledger.attach(admin.deployment["provenance"], admin.deployment["grants"])
    admin.register_site(ledger.address, "uke")
    yield ledger
    ledger.close()
