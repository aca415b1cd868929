"""Cloud-MRI Workbench core library: MRD data layer, reconstruction and the data platform.

Headless by design: nothing here imports ipywidgets, voila or jupyterhub.
"""

__version__ = "0.1.0"

# The notebook conveniences (``cloudmri_kernel.datasets()`` …) live in cloudmri_kernel.notebook and are forwarded
# on first use, so that importing the package stays light (no httpx, no numpy).
_NOTEBOOK_NAMES = frozenset({"connect", "default_client", "whoami", "datasets", "dataset", "upload", "reconstruct",
                             "images"})


def __getattr__(name: str):
    if name in _NOTEBOOK_NAMES:
        import importlib

        return getattr(importlib.import_module("cloudmri_kernel.notebook"), name)
    raise AttributeError(f"module 'cloudmri_kernel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_NOTEBOOK_NAMES})
