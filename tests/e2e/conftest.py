"""End-to-end tests share the small phantom file with the service tests and the running workbench with the hub tests."""

from tests.browser import browser  # noqa: F401 - fixture: Debian's Chromium
from tests.hub.conftest import workbench  # noqa: F401 - fixture: the browser tests' running workbench
from tests.service.conftest import phantom_mrd  # noqa: F401 - fixture
