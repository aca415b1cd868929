"""``python -m cloudmri_kernel`` runs the ``cloudmri`` command line."""

from cloudmri_kernel.cli import app

app(prog_name="cloudmri")
