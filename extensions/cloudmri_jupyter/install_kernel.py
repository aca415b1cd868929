"""Install the "Cloud-MRI (Python 3)" kernelspec (name ``cloudmri``).

The kernel is ipykernel with ``cloudmri_kernel`` imported as ``cm`` at startup; its notebook conveniences
(``cm.datasets()`` …) connect on first use with the user's own token (see :mod:`cloudmri_kernel.notebook`).

Usage::

    python -m cloudmri_jupyter.install_kernel --sys-prefix      # into this environment (what the hub does)
    python -m cloudmri_jupyter.install_kernel --user            # into ~/.local/share/jupyter/kernels
    python -m cloudmri_jupyter.install_kernel --prefix /opt/env # into /opt/env/share/jupyter/kernels
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

KERNEL_NAME = "cloudmri"
KERNELSPEC_DIR = Path(__file__).with_name("kernelspec")


def install_kernel(prefix: str | Path | None = None, user: bool = False, python: str = sys.executable) -> Path:
    """Install the kernelspec, with ``python`` as the interpreter that runs the kernel.

    Args:
        prefix: install into ``PREFIX/share/jupyter/kernels/cloudmri`` (e.g. ``sys.prefix`` for a venv).
        user: install into the user's Jupyter data directory instead.
        python: the interpreter that has ``ipykernel`` and ``cloudmri_kernel``; default this one.

    Returns:
        The directory the kernelspec was installed to; an earlier installation there is replaced.

    Raises:
        ValueError: both ``prefix`` and ``user`` were given.
        OSError: the kernel directory cannot be written (without either, the system-wide one needs an administrator).
    """
    if prefix is not None and user:
        raise ValueError("choose one place for the kernel: a prefix or the user's directory, not both")
    with tempfile.TemporaryDirectory() as staging:
        source = Path(staging) / KERNEL_NAME
        shutil.copytree(KERNELSPEC_DIR, source)
        spec_file = source / "kernel.json"
        spec = json.loads(spec_file.read_text())
        spec["argv"][0] = python
        spec_file.write_text(json.dumps(spec, indent=2) + "\n")
        return Path(KernelSpecManager().install_kernel_spec(
            str(source), KERNEL_NAME, user=user, prefix=None if prefix is None else str(prefix)))


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (0, or 2 when the kernel directory cannot be written)."""
    parser = argparse.ArgumentParser(prog="python -m cloudmri_jupyter.install_kernel",
                                     description="Install the 'Cloud-MRI (Python 3)' Jupyter kernel.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--prefix", help="install into PREFIX/share/jupyter/kernels (e.g. a venv or conda env)")
    where.add_argument("--sys-prefix", action="store_true", help=f"install into this environment ({sys.prefix})")
    where.add_argument("--user", action="store_true", help="install into the user's Jupyter data directory")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs the kernel (default: %(default)s)")
    args = parser.parse_args(argv)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    try:
        path = install_kernel(prefix, user=args.user, python=args.python)
    except OSError as exc:
        print(f"cannot write the kernelspec ({exc}): choose a writable place with --prefix, --sys-prefix or --user",
              file=sys.stderr)
        return 2
    print(f"installed the Cloud-MRI kernel ({KERNEL_NAME}) in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
