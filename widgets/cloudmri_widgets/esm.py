"""The widgets' ES modules as anywidget receives them: the shared helpers (``imaging.js``) then the widget's own
module, one string, so each widget stays a single hand-written module with no build step."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def es_module(name: str) -> str:
    """``imaging.js`` followed by ``name`` (e.g. ``"viewer.js"``), from this package."""
    return (HERE / "imaging.js").read_text() + "\n" + (HERE / name).read_text()
