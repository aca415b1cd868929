"""Records every file a Python process opens (PEP 578 audit hook), to prove which processes read a site's store.

Active only when CLOUDMRI_OPEN_LOG is set: each process appends "path" lines to CLOUDMRI_OPEN_LOG.<pid>. Put
this directory on PYTHONPATH of a process; its Python children (Flower's ServerApp and ClientApp processes)
inherit the variable and log too.
"""

import os
import sys

_prefix = os.environ.get("CLOUDMRI_OPEN_LOG")
if _prefix:
    _fd = os.open(f"{_prefix}.{os.getpid()}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    _busy = False

    def _hook(event, args):
        global _busy
        if event != "open" or _busy or not args or not isinstance(args[0], str | bytes):
            return
        _busy = True
        try:
            path = os.fsdecode(args[0])
            os.write(_fd, (os.path.abspath(path) + "\n").encode("utf-8", "surrogateescape"))
        finally:
            _busy = False

    sys.addaudithook(_hook)
