"""Settings of the ledger, declared in one place: env ``CLOUDMRI_LEDGER_*``, then defaults.

The default is the single-machine form: an anvil node on 127.0.0.1 (``cloudmri ledger node``) whose state file,
contract addresses, anchoring queue and signing key live in ``DATA_DIR/ledger``. A consortium points
``CLOUDMRI_LEDGER_RPC_URL`` at its own Ethereum JSON-RPC node (geth, Besu) and ``CLOUDMRI_LEDGER_KEY_FILE`` at the
site's key.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloudmri_kernel.config import settings as core_settings
from cloudmri_kernel.errors import UsageError


class LedgerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLOUDMRI_LEDGER_", extra="forbid")

    dir: Path | None = Field(
        default=None,
        description="Directory of the ledger's local state: anvil's state file, contract addresses, the "
        "anchoring queue (SQLite, WAL) and the default key. Default: DATA_DIR/ledger. "
        "Example: CLOUDMRI_LEDGER_DIR=/srv/cloudmri/ledger",
    )
    rpc_url: str = Field(
        default="http://127.0.0.1:8545",
        description="Ethereum JSON-RPC URL of the ledger node; default: the local anvil of `cloudmri ledger node`. "
        "Example: CLOUDMRI_LEDGER_RPC_URL=https://besu.consortium.example.org:8545",
    )
    port: int = Field(
        default=8545, gt=0, lt=65536,
        description="Port on 127.0.0.1 where `cloudmri ledger node` serves anvil. Example: CLOUDMRI_LEDGER_PORT=8546",
    )
    key_file: Path | None = Field(
        default=None,
        description="This site's signing key (mode 0600): 32 raw bytes, 64 hex digits, or an Ethereum keystore "
        "JSON (password in CLOUDMRI_LEDGER_KEY_PASSWORD). Default: LEDGER_DIR/keys/site.key, created on first "
        "use (fine for the local node; on a consortium chain, fund and register its address). "
        "Example: CLOUDMRI_LEDGER_KEY_FILE=/run/secrets/ledger.key",
    )
    key_password: str | None = Field(
        default=None,
        description="Password of a keystore key file. Example: CLOUDMRI_LEDGER_KEY_PASSWORD=...",
    )
    site: str | None = Field(
        default=None,
        description="Site name this account anchors for; default: CLOUDMRI_SITE. Example: CLOUDMRI_LEDGER_SITE=charite",
    )
    batch_size: int = Field(
        default=1024, gt=0, le=1 << 20,
        description="A batch is anchored as soon as this many records wait. Example: CLOUDMRI_LEDGER_BATCH_SIZE=4096",
    )
    batch_delay_s: float = Field(
        default=10.0, ge=0,
        description="A record waits at most this long before its (possibly smaller) batch is anchored. "
        "Example: CLOUDMRI_LEDGER_BATCH_DELAY_S=60",
    )
    confirmations: int = Field(
        default=1, ge=1,
        description="Blocks (the including one counted) before an anchor counts as confirmed; raise it on chains "
        "that can reorganize. Example: CLOUDMRI_LEDGER_CONFIRMATIONS=6",
    )
    tx_timeout_s: float = Field(
        default=120.0, gt=0,
        description="How long to wait for a transaction to be mined. Example: CLOUDMRI_LEDGER_TX_TIMEOUT_S=600",
    )
    enabled: bool | None = Field(
        default=None,
        description="Whether the API service anchors what it stores and consults on-chain grants. Default: when "
        "the contracts are deployed or attached in LEDGER_DIR (its addresses.json exists); `cloudmri up` sets it. "
        "Example: CLOUDMRI_LEDGER_ENABLED=false",
    )
    flush_poll_s: float = Field(
        default=1.0, gt=0, le=60,
        description="How often the service's flusher looks for due batches; after a failure it waits twice as long "
        "each time, up to a minute. Example: CLOUDMRI_LEDGER_FLUSH_POLL_S=0.2",
    )
    alert_after_s: float = Field(
        default=300.0, gt=0,
        description="The service raises its ledger alert when the node does not answer, or when a record has waited "
        "this long to be anchored. Example: CLOUDMRI_LEDGER_ALERT_AFTER_S=900",
    )
    grant_cache_s: float = Field(
        default=30.0, ge=0,
        description="How long the service trusts an on-chain grant lookup; revocations the service issues itself "
        "take effect at once. Example: CLOUDMRI_LEDGER_GRANT_CACHE_S=5",
    )
    anvil: Path | None = Field(
        default=None,
        description="The anvil program; default: the one installed by npm (`@foundry-rs/anvil`) in node_modules, "
        "else `anvil` on PATH. Example: CLOUDMRI_LEDGER_ANVIL=/usr/local/bin/anvil",
    )

    @property
    def directory(self) -> Path:
        return self.dir if self.dir is not None else core_settings().data_dir / "ledger"

    @property
    def service_enabled(self) -> bool:
        """Whether the API service uses the ledger (see ``enabled``)."""
        if self.enabled is not None:
            return self.enabled
        return (self.directory / "addresses.json").exists()

    @property
    def site_name(self) -> str:
        return self.site if self.site is not None else core_settings().site


def ledger_settings() -> LedgerSettings:
    """The effective ledger settings, read afresh so a changed environment takes effect."""
    try:
        return LedgerSettings()
    except ValueError as exc:
        raise UsageError(f"invalid ledger configuration: {exc}") from None
