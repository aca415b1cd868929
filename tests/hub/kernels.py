"""Run code in a kernel of a user's Jupyter server the way JupyterLab does: REST to start it, then the kernel
messaging protocol (v5) over the server's websocket, authenticated with the user's hub token."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import websocket


@dataclass
class Execution:
    stdout: str = ""
    error: str | None = None
    results: list[str] = field(default_factory=list)


def _message(msg_type: str, content: dict, session: str) -> dict:
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": session, "username": "test",
                       "version": "5.3", "date": datetime.now(UTC).isoformat()},
            "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": []}


def run_code(server_url: str, token: str, code: str, kernel: str = "cloudmri", timeout: float = 120) -> Execution:
    """Start ``kernel`` on the server at ``server_url`` (ending in /), run ``code``, shut the kernel down."""
    headers = {"Authorization": f"token {token}"}
    started = httpx.post(f"{server_url}api/kernels", json={"name": kernel}, headers=headers, timeout=60)
    started.raise_for_status()
    kernel_id = started.json()["id"]
    socket = websocket.create_connection(
        f"{server_url.replace('http', 'ws', 1)}api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}",
        header=[f"Authorization: token {token}"], timeout=timeout)
    try:
        request = _message("execute_request", {"code": code, "silent": False, "store_history": False,
                                               "user_expressions": {}, "allow_stdin": False,
                                               "stop_on_error": True}, uuid.uuid4().hex)
        socket.send(json.dumps(request))
        result = Execution()
        while True:
            reply = json.loads(socket.recv())
            if reply.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
                continue
            kind, content = reply["msg_type"], reply["content"]
            if kind == "stream":
                result.stdout += content["text"]
            elif kind == "execute_result":
                result.results.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                result.error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                return result
    finally:
        socket.close()
        httpx.delete(f"{server_url}api/kernels/{kernel_id}", headers=headers, timeout=30)
