"""End-to-end tests share the small phantom file with the service tests."""

from tests.service.conftest import phantom_mrd  # noqa: F401 - fixture
