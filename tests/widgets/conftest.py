"""The widget tests share the project's browser fixture, and the ledger widget's tests a real service with a
ledger on a real anvil node."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudmri_kernel.ledger.testing import ledger_for, start_node
from cloudmri_kernel.service.testing import ServiceProcess, create_token, service_env
from tests.browser import browser  # noqa: F401 - fixture


@dataclass
class LedgerWorkbench:
    """The service (site siteA anchors with its own key), tokens of siteA's researcher alice and admin ada, and
    the account registered on chain for a second site, siteB."""

    service: ServiceProcess
    tokens: dict[str, str]
    site_b_account: str

    @property
    def data_dir(self) -> Path:
        return self.service.data_dir


@pytest.fixture(scope="module")
def ledger_service(tmp_path_factory):
    """The API service as a child process with its ledger on a real anvil node (contracts deployed by a
    consortium key, the service's key registered for siteA) and a batch delay of 0, so uploads anchor at once."""
    root = tmp_path_factory.mktemp("ledger-workbench")
    node = start_node(root / "node")
    try:
        consortium = ledger_for(root / "consortium", node.url)
        consortium.deploy("consortium")
        site_b = ledger_for(root / "siteB", node.url)
        consortium.register_site(site_b.address, "siteB")
        env = service_env(root / "service", upload_chunk_mb=1)
        ledger_dir = root / "service" / "ledger"
        with ledger_for(ledger_dir, node.url) as own:  # the service's key: ledger_dir/site.key
            own.attach(consortium.deployment["provenance"], consortium.deployment["grants"])
            consortium.register_site(own.address, "siteA")
        env.update({"CLOUDMRI_LEDGER_ENABLED": "true", "CLOUDMRI_LEDGER_RPC_URL": node.url,
                    "CLOUDMRI_LEDGER_DIR": str(ledger_dir), "CLOUDMRI_LEDGER_KEY_FILE": str(ledger_dir / "site.key"),
                    "CLOUDMRI_LEDGER_BATCH_DELAY_S": "0", "CLOUDMRI_LEDGER_FLUSH_POLL_S": "0.1",
                    "CLOUDMRI_LEDGER_ALERT_AFTER_S": "3600"})
        with ServiceProcess(env) as service:
            tokens = {user: create_token(env, user, "siteA", [role])
                      for user, role in (("alice", "researcher"), ("ada", "admin"))}
            yield LedgerWorkbench(service, tokens, site_b.address)
        site_b.close()
        consortium.close()
    finally:
        node.kill()


# The API service (no ledger) as a child process, for the upload and reconstruction widgets' tests.

from datetime import timedelta  # noqa: E402

from cloudmri_kernel.client import Client  # noqa: E402
from cloudmri_kernel.service.identity import ROLE_SCOPES, LocalTokens  # noqa: E402


@dataclass
class WidgetWorkbench:
    """The service and tokens for it: ``alice`` (researcher at siteA) and ``expired`` (alice's, expired)."""

    service: ServiceProcess
    tokens: dict[str, str]

    def client(self, user: str = "alice") -> Client:
        return Client(self.service.url, self.tokens[user])


@pytest.fixture(scope="session")
def widget_service(tmp_path_factory) -> WidgetWorkbench:
    root = tmp_path_factory.mktemp("widget-workbench")
    env = service_env(root / "service", upload_chunk_mb=1)
    # One torch thread per job: on a machine whose few cores are busy, more threads make a recon far slower.
    env["OMP_NUM_THREADS"] = "1"
    with ServiceProcess(env) as service:
        tokens = {"alice": create_token(env, "alice", "siteA", ["researcher"])}
        # The service's local tokens (what `cloudmri service token create` writes), one already expired.
        local = LocalTokens(service.data_dir / "service" / "tokens.json")
        tokens["expired"] = local.create("alice", "siteA", ROLE_SCOPES["researcher"], timedelta(seconds=-1))
        yield WidgetWorkbench(service, tokens)


@pytest.fixture
def alice(widget_service) -> Client:
    """alice's client of the widget service."""
    with widget_service.client("alice") as client:
        yield client


@pytest.fixture(scope="session")
def reading_staff(widget_service) -> dict[str, Client]:
    """Clients of a radiologist ``rita`` and an admin ``ada`` at alice's site (the service's own tokens)."""
    local = LocalTokens(widget_service.service.data_dir / "service" / "tokens.json")
    clients = {user: Client(widget_service.service.url, local.create(user, "siteA", ROLE_SCOPES[role],
                                                                      timedelta(hours=1)))
               for user, role in (("rita", "radiologist"), ("ada", "admin"))}
    yield clients
    for client in clients.values():
        client.close()
