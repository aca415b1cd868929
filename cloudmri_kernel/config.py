"""One declared settings object for the core library.

Every setting has a type, a default and a help text with an example; values come from ``CLOUDMRI_*``
environment variables, then from the YAML file named by ``CLOUDMRI_CONFIG`` (if set), then the defaults.
``cloudmri config show`` prints the effective values. Unknown keys are errors, not silent defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cloudmri_kernel.errors import UsageError


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the file named by CLOUDMRI_CONFIG, lowest priority after the environment."""

    def get_field_value(self, field, field_name):  # pragma: no cover - required by the interface
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("CLOUDMRI_CONFIG")
        if not path:
            return {}
        try:
            content = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"cannot read the config file ({exc})", path) from None
        if not isinstance(content, dict):
            raise UsageError("the config file must be a YAML mapping of setting: value", path)
        return content


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLOUDMRI_", extra="forbid")

    data_dir: Path = Field(
        default=Path.home() / ".local" / "share" / "cloudmri",
        description="Where the workbench keeps its state (site keys, demo outputs). "
        "Example: CLOUDMRI_DATA_DIR=/srv/cloudmri",
    )
    site: str = Field(
        default="local",
        description="Name of this site (hospital or edge node); pseudonyms are keyed per site. "
        "Example: CLOUDMRI_SITE=charite",
    )
    site_key_file: Path | None = Field(
        default=None,
        description="File holding this site's pseudonymization key (32+ random bytes, mode 0600). "
        "Default: DATA_DIR/keys/SITE.key, created on first use. Example: CLOUDMRI_SITE_KEY_FILE=/run/secrets/site.key",
    )
    mrd_schema: Path = Field(
        default=Path(__file__).parent / "mrd" / "schema" / "ismrmrd.xsd",
        description="The ISMRMRD XSD used by `cloudmri validate`; default: the schema of ismrmrd 1.15 shipped "
        "with this package. Example: CLOUDMRI_MRD_SCHEMA=/usr/share/ismrmrd/schema/ismrmrd.xsd",
    )
    read_chunk_mb: int = Field(
        default=16,
        gt=0,
        description="Bulk reads copy acquisitions in chunks of this many MiB, which bounds the memory "
        "used above the k-space array itself. Example: CLOUDMRI_READ_CHUNK_MB=256",
    )

    dask_scheduler: str | None = Field(
        default=None,
        description="Address of a running Dask scheduler for reconstruction work; default: a LocalCluster "
        "started per job. Example: CLOUDMRI_DASK_SCHEDULER=tcp://10.0.0.5:8786",
    )
    dask_gateway: str | None = Field(
        default=None,
        description="URL of a Dask-Gateway server (the Kubernetes form); needs the dask-gateway package. "
        "Example: CLOUDMRI_DASK_GATEWAY=https://hub.example.org/services/dask-gateway",
    )

    store_url: str | None = Field(
        default=None,
        description="Where the encrypted object store keeps its objects: a directory or an fsspec URL of an "
        "S3-compatible bucket. Default: DATA_DIR/store. Example: CLOUDMRI_STORE_URL=s3://cloudmri-prod/store",
    )
    store_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for a remote store (endpoint, credentials from env are preferred). "
        'Example: CLOUDMRI_STORE_OPTIONS=\'{"endpoint_url": "http://127.0.0.1:9000"}\'',
    )
    catalog_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog database. Default: SQLite (WAL) at DATA_DIR/catalog.sqlite. "
        "Example: CLOUDMRI_CATALOG_URL=postgresql+psycopg://cloudmri@db.example.org/cloudmri",
    )
    service_url: str = Field(
        default="http://127.0.0.1:8765",
        description="Base URL of the Cloud-MRI API service that clients and the CLI talk to; inside a hub, the "
        "service's proxied URL. Example: CLOUDMRI_SERVICE_URL=http://127.0.0.1:8000/services/cloudmri",
    )
    service_token: str | None = Field(
        default=None,
        description="Token the client sends; default: JUPYTERHUB_API_TOKEN inside a hub. Prefer "
        "service_token_file. Example: CLOUDMRI_SERVICE_TOKEN_FILE=~/.cloudmri/token",
    )
    service_token_file: Path | None = Field(
        default=None,
        description="File (mode 0600) holding the client's token. "
        "Example: CLOUDMRI_SERVICE_TOKEN_FILE=~/.cloudmri/token",
    )
    hub_api_url: str | None = Field(
        default=None,
        description="JupyterHub API URL the service checks tokens against (hub mode); default: "
        "JUPYTERHUB_API_URL when the hub runs the service, else local token mode. "
        "Example: CLOUDMRI_HUB_API_URL=http://127.0.0.1:8081/hub/api",
    )
    upload_chunk_mb: int = Field(
        default=8,
        gt=0,
        le=256,
        description="Size of one upload chunk; the service refuses larger request bodies (413). "
        "Example: CLOUDMRI_UPLOAD_CHUNK_MB=32",
    )
    upload_expiry_hours: float = Field(
        default=72,
        gt=0,
        description="An unfinished upload that has not moved for this long is given up at the next service "
        "start, and its staged bytes are deleted. Example: CLOUDMRI_UPLOAD_EXPIRY_HOURS=168",
    )

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, env_settings, _YamlFileSource(settings_cls)


def settings() -> Settings:
    """The effective settings, read afresh so a changed environment takes effect."""
    try:
        return Settings()
    except ValueError as exc:
        raise UsageError(f"invalid configuration: {exc}") from None
