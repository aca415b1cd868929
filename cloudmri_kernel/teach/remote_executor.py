"""Execute a notebook in a kernel of a remote Jupyter server, cell by cell, over the server's kernel websocket.

This is what JupyterLab does with a user's server, and what nbclient does with a local kernel: the kernel is
started with the server's REST API (``POST /api/kernels`` with a kernel name and the notebook's folder as its
working directory), each code cell is sent as an ``execute_request`` on the shell channel of
``/api/kernels/{id}/channels``, and the kernel's IOPub messages for that request become the cell's outputs as
nbclient keeps them (:func:`nbformat.v4.output_from_msg`): ``stream`` (consecutive text of one stream merged),
``display_data``, ``execute_result`` and ``error``; ``clear_output`` (also ``wait=True``) and
``update_display_data`` (by ``transient.display_id``, in any cell) are applied. A cell is done when its
``execute_reply`` has come and the kernel has gone ``idle`` for it. A cell that runs past its time limit is
interrupted (``POST /api/kernels/{id}/interrupt``), so that its outputs show where it was stopped, and reported
as :class:`CellTimeout`; a cell whose reply is an error stops the notebook with :class:`CellError`. The kernel
is shut down (``DELETE /api/kernels/{id}``) when the ``with`` block ends, whatever happened.

Messages use the websocket's default JSON framing (one message per text frame, with a ``channel`` key); binary
frames carry buffers (widgets' comm messages), which no notebook output holds, and are skipped.

Neither nbclient nor papermill can drive a kernel behind a URL: they start kernels with a local
``KernelManager``. jupyter_server's ``GatewayKernelManager`` can, but its server URL and token are process-wide
settings (``GatewayClient.instance()``), so it cannot reach several students' servers with one token each at
once.

References:
    Jupyter Client documentation, "Messaging in Jupyter", protocol version 5.3 (execute_request/execute_reply,
    status, stream, display_data, update_display_data, execute_result, error, clear_output,
    kernel_info_request).
    Jupyter Server documentation, "REST API" (``/api/kernels``) and "WebSocket kernel wire protocols" (the
    default JSON protocol of ``/api/kernels/{id}/channels``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import nbformat
import websocket
from nbformat.v4 import output_from_msg

from cloudmri_kernel.teach.hub import reason

#: The messaging protocol version this client speaks.
PROTOCOL_VERSION = "5.3"
#: Seconds an interrupted cell is given to report where it stopped, after its time limit.
INTERRUPT_GRACE = 10.0
#: Seconds between checks for cancellation while a cell runs.
_POLL = 1.0


class KernelError(RuntimeError):
    """The kernel could not be started, or died, or its connection closed; the message says which and why."""


class Cancelled(RuntimeError):
    """The run was cancelled (the ``cancel`` event was set) while a cell ran."""


class CellError(RuntimeError):
    """A cell raised: ``cell`` is the cell (its outputs hold the traceback), ``ename``/``evalue`` the error."""

    def __init__(self, cell: nbformat.NotebookNode, ename: str, evalue: str):
        super().__init__(f"{ename}: {evalue}")
        self.cell, self.ename, self.evalue = cell, ename, evalue


class CellTimeout(RuntimeError):
    """A cell ran longer than its time limit and was interrupted: ``cell`` is the cell."""

    def __init__(self, cell: nbformat.NotebookNode, seconds: float):
        super().__init__(f"the cell ran longer than the limit of {seconds:g} s")
        self.cell, self.seconds = cell, seconds


class RemoteKernel:
    """A kernel of a Jupyter server, started on entering the ``with`` block and shut down on leaving it.

    Args:
        http: a client that authenticates to the server (``Authorization: token …`` among its headers).
        server_url: the server's URL with its base URL, ending in ``/`` (``http://hub/user/ana/``).
        kernel_name: a kernel spec on that server (``GET /api/kernelspecs`` lists them).
        path: the kernel's working directory, relative to the server's root (the notebook's folder).
        start_timeout: seconds the kernel may take to start and answer ``kernel_info_request``.
        cancel: when set, a running cell stops with :class:`Cancelled`.

    Example:
        >>> with RemoteKernel(http, "http://127.0.0.1:8888/", "python3") as kernel:  # doctest: +SKIP
        ...     execute_notebook(notebook, kernel, cell_timeout=60)
    """

    def __init__(self, http: httpx.Client, server_url: str, kernel_name: str, path: str = "",
                 start_timeout: float = 120.0, cancel: threading.Event | None = None):
        self.http = http
        self.server_url = server_url
        self.kernel_name = kernel_name
        self.path = path
        self.start_timeout = start_timeout
        self.cancel = cancel or threading.Event()
        self.session = uuid.uuid4().hex
        self.kernel_id: str | None = None
        self.socket: websocket.WebSocket | None = None
        self._displays: dict[str, list[nbformat.NotebookNode]] = {}

    def __enter__(self) -> RemoteKernel:
        reply = self.http.post(f"{self.server_url}api/kernels", json={"name": self.kernel_name, "path": self.path},
                               timeout=self.start_timeout)
        if reply.status_code != 201:
            raise KernelError(f"the server did not start a '{self.kernel_name}' kernel ({reason(reply)})")
        self.kernel_id = reply.json()["id"]
        try:
            url = (f"{self.server_url.replace('http', 'ws', 1)}api/kernels/{self.kernel_id}/channels"
                   f"?session_id={self.session}")
            token = self.http.headers.get("Authorization")
            headers = [f"Authorization: {token}"] if token else []
            try:
                self.socket = websocket.create_connection(url, header=headers, timeout=self.start_timeout)
            except (websocket.WebSocketException, OSError) as exc:
                raise KernelError(f"no websocket to the kernel at {url.partition('?')[0]} ({exc})") from None
            self._wait_until_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_exc_info) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        if self.kernel_id is not None:
            try:
                self.http.delete(f"{self.server_url}api/kernels/{self.kernel_id}")
            except httpx.HTTPError:
                pass  # the server is gone, and its kernels with it
            self.kernel_id = None

    def _send(self, msg_type: str, content: dict, channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        self.socket.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session, "username": "cloudmri-teach",
                       "version": PROTOCOL_VERSION, "date": datetime.now(UTC).isoformat()},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel, "buffers": []}))
        return msg_id

    def _receive(self, deadline: float) -> dict | None:
        """The next JSON message, or None at the deadline (checking for cancellation every second)."""
        while True:
            if self.cancel.is_set():
                raise Cancelled("cancelled while a cell ran")
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.socket.settimeout(min(left, _POLL))
            try:
                opcode, data = self.socket.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketConnectionClosedException, OSError) as exc:
                raise KernelError(f"the connection to the kernel closed ({exc or 'by the server'})") from None
            if opcode == websocket.ABNF.OPCODE_TEXT:
                return json.loads(data)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise KernelError("the server closed the connection to the kernel")

    def _wait_until_ready(self) -> None:
        # Messages sent before the kernel is up are lost; ask again until one is answered, as nbclient does.
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            msg_id = self._send("kernel_info_request", {})
            answer_by = min(deadline, time.monotonic() + 2.0)
            while (msg := self._receive(answer_by)) is not None:
                if msg["msg_type"] == "kernel_info_reply" and msg["parent_header"].get("msg_id") == msg_id:
                    return
        raise KernelError(f"the '{self.kernel_name}' kernel did not answer within {self.start_timeout:g} s")

    def interrupt(self) -> None:
        self.http.post(f"{self.server_url}api/kernels/{self.kernel_id}/interrupt")

    def run_cell(self, cell: nbformat.NotebookNode, timeout: float) -> dict:
        """Execute one code cell, filling its ``outputs`` and ``execution_count``; returns the execute_reply's
        content.

        Raises:
            CellTimeout: the cell ran longer than ``timeout`` seconds (it was interrupted).
            KernelError: the kernel died or the connection closed.
            Cancelled: the ``cancel`` event was set.
        """
        cell.outputs = []
        cell.execution_count = None
        msg_id = self._send("execute_request", {"code": cell.source, "silent": False, "store_history": True,
                                                "user_expressions": {}, "allow_stdin": False,
                                                "stop_on_error": True})
        reply, idle, clear_pending = None, False, False
        deadline, timed_out = time.monotonic() + timeout, False
        while reply is None or not idle:
            msg = self._receive(deadline)
            if msg is None:
                if timed_out:
                    raise CellTimeout(cell, timeout)
                timed_out, deadline = True, time.monotonic() + INTERRUPT_GRACE
                self.interrupt()
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if msg.get("channel") == "shell" and kind == "execute_reply":
                reply = content
                cell.execution_count = content.get("execution_count")
            elif kind == "status":
                state = content["execution_state"]
                if state in ("dead", "restarting"):
                    raise KernelError(f"the kernel died while it ran the cell ({state})")
                idle = state == "idle"
            elif kind == "execute_input":
                cell.execution_count = content.get("execution_count")
            elif kind == "clear_output":
                if content.get("wait"):
                    clear_pending = True
                else:
                    cell.outputs = []
            elif kind == "update_display_data":
                for output in self._displays.get(content.get("transient", {}).get("display_id"), []):
                    output.data, output.metadata = content["data"], content["metadata"]
            elif kind in ("stream", "display_data", "execute_result", "error"):
                if clear_pending:
                    cell.outputs, clear_pending = [], False
                self._add_output(cell, msg)
        if timed_out:
            raise CellTimeout(cell, timeout)
        return reply

    def _add_output(self, cell: nbformat.NotebookNode, msg: dict) -> None:
        last = cell.outputs[-1] if cell.outputs else None
        content = msg["content"]
        if (msg["msg_type"] == "stream" and last is not None and last.output_type == "stream"
                and last.name == content["name"]):
            last.text += content["text"]
            return
        output = output_from_msg(msg)
        cell.outputs.append(output)
        display_id = content.get("transient", {}).get("display_id")
        if display_id:
            self._displays.setdefault(display_id, []).append(output)


def execute_notebook(notebook: nbformat.NotebookNode, kernel: RemoteKernel, cell_timeout: float,
                     on_cell: Callable[[int, nbformat.NotebookNode], None] | None = None) -> None:
    """Execute every code cell of ``notebook`` in order in ``kernel``, keeping the outputs in the notebook.

    Args:
        notebook: the notebook; its cells' ``outputs`` and ``execution_count`` are replaced as they run.
        kernel: a started :class:`RemoteKernel`.
        cell_timeout: seconds one cell may run.
        on_cell: ``on_cell(index, cell)`` before each code cell runs.

    Raises:
        CellError: a cell raised (the notebook's later cells keep no outputs).
        CellTimeout: a cell ran longer than ``cell_timeout``.
        KernelError: the kernel died or the connection closed.
        Cancelled: the kernel's ``cancel`` event was set.
    """
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if on_cell is not None:
            on_cell(index, cell)
        if not cell.source.strip():
            cell.outputs, cell.execution_count = [], None
            continue
        reply = kernel.run_cell(cell, cell_timeout)
        if reply.get("status") == "error":
            raise CellError(cell, reply.get("ename", "Error"), reply.get("evalue", ""))
