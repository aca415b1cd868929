"""The client tests run against the service fixtures."""

from tests.service.conftest import api, phantom_mrd  # noqa: F401 - fixtures shared with the service tests
