"""Cloud-MRI Workbench core library: MRD data layer, reconstruction and the data platform.

Headless by design: nothing here imports ipywidgets, voila or jupyterhub.
"""

__version__ = "0.1.0"
