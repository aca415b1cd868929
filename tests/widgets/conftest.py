"""The widget tests share the project's browser fixture."""

from tests.browser import browser  # noqa: F401 - fixture
