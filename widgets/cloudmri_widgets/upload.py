"""A notebook form to upload MRD raw files to the Cloud-MRI service: validate, de-identify, send, show the IDs.

What ``cloudmri validate`` and ``cloudmri upload --anonymize`` do, as a form: files picked in the browser (or a
path on the server the kernel runs on) are first checked against the ISMRMRD schema and their own headers
(:func:`cloudmri_kernel.mrd.validate.validate_file`); if any file has an error, *nothing* is uploaded and the
findings are listed. Then each file is de-identified with the chosen policy and the site's pseudonymization key
(:func:`cloudmri_kernel.mrd.anonymize.anonymize_file`, DICOM PS3.15 Annex E) and sent in resumable chunks
(:meth:`cloudmri_kernel.client.Client.upload`), with a progress bar per file and the new dataset's ID.

Example:
    >>> from cloudmri_widgets import Upload
    >>> form = Upload()  # doctest: +SKIP
    >>> form  # doctest: +SKIP
    >>> form.path.value = "/data/scans/knee.h5"  # doctest: +SKIP
    >>> form.upload()  # doctest: +SKIP
    ['3f2a…']
"""

from __future__ import annotations

import html
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as widgets
import traitlets

from cloudmri_kernel.client import ServiceError
from cloudmri_kernel.errors import CloudMRIError

if TYPE_CHECKING:
    from cloudmri_kernel.client import Client

__all__ = ["Upload", "POLICIES"]

#: The anonymization choices: no change, the built-in policy, or a policy YAML file (``policy_file``).
POLICIES = {
    "default": "de-identify: built-in policy (DICOM PS3.15 basic profile)",
    "file": "de-identify: policy from a YAML file",
    "none": "send the header as it is",
}
#: File names a server-side folder contributes.
MRD_SUFFIXES = (".h5", ".mrd")


@dataclass
class _Source:
    """One file to send, with its row in the form."""

    name: str
    path: Path
    progress: widgets.IntProgress
    status: widgets.HTML


def token_problem(error: ServiceError) -> str | None:
    """A message for people when the service refused the caller's token (401) or scope (403); else None."""
    if error.status == 401:
        return (f"The service did not accept your token ({html.escape(str(_detail(error)))}). Nothing was lost: "
                "your choices are kept here. Get a new token (log in to the hub again, or "
                "<code>cloudmri service token create … --save</code>), set <code>widget.client = "
                "Client(token=…)</code> and press the button again.")
    if error.status == 403:
        return (f"The service refused this request ({html.escape(str(_detail(error)))}): ask an admin for the "
                "scope it needs. Nothing was changed.")
    return None


def _detail(error: ServiceError):
    detail = error.detail
    return detail.get("message", detail) if isinstance(detail, dict) else detail


def _findings_html(findings: list[dict]) -> str:
    items = "".join(f"<li><b>{html.escape(f['severity'])}</b> {html.escape(f['where'])}: "
                    f"{html.escape(f['message'])}</li>" for f in findings)
    return f"<ul style='margin:0'>{items}</ul>" if items else ""


class Upload(widgets.VBox):
    """A form that validates, de-identifies and uploads MRD raw files to the caller's site.

    Args:
        client: a :class:`cloudmri_kernel.client.Client`; None for the notebook's default client.

    Attributes:
        files: the browser's file picker (several files at once).
        path: a file or folder on the server the kernel runs on (a folder contributes its ``*.h5``/``*.mrd``).
        site: the site the data go to and whose key makes the pseudonyms (the caller's site, from ``whoami``).
        policy: ``default``, ``file`` (the YAML in ``policy_file``) or ``none``; see :data:`POLICIES`.
        results: one entry per file of the last run: ``{"file", "valid", "findings", "dataset_id", "error"}``.
        dataset_ids: the datasets the last run created, in file order.
    """

    results = traitlets.List(traitlets.Dict(), help="per file: file, valid, findings, dataset_id, error")
    dataset_ids = traitlets.List(traitlets.Unicode(), help="datasets created by the last run")
    busy = traitlets.Bool(False, help="an upload is running")

    def __init__(self, client: Client | None = None, **kwargs):
        if client is None:
            from cloudmri_kernel.notebook import default_client
            client = default_client()
        self.client = client
        self.files = widgets.FileUpload(accept=",".join(MRD_SUFFIXES), multiple=True, description="Pick files")
        self.path = widgets.Text(description="or path", placeholder="a file or folder on the server, e.g. "
                                 "~/scans/knee.h5", layout=widgets.Layout(width="32em"))
        self.site = widgets.Dropdown(description="Site", options=[])
        self.policy = widgets.Dropdown(description="Anonymize", options=[(v, k) for k, v in POLICIES.items()],
                                       value="default", layout=widgets.Layout(width="32em"))
        self.policy_file = widgets.Text(description="Policy YAML", placeholder="policy.yaml",
                                        layout=widgets.Layout(width="32em", display="none"))
        self.button = widgets.Button(description="Validate and upload", icon="upload", button_style="primary")
        self.rows = widgets.VBox()
        self.message = widgets.HTML()
        self._thread: threading.Thread | None = None
        self._scratch = tempfile.TemporaryDirectory(prefix="cloudmri-upload-")
        self.policy.observe(self._show_policy_file, names="value")
        self.button.on_click(lambda _button: self.start())
        super().__init__([widgets.HBox([self.files, self.path]), widgets.HBox([self.site, self.policy]),
                          self.policy_file, self.button, self.rows, self.message], **kwargs)
        self.refresh_site()

    def _show_policy_file(self, change) -> None:
        self.policy_file.layout.display = "" if change.new == "file" else "none"

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "inherit"
        self.message.value = f"<div style='color:{colour}'>{text}</div>" if text else ""

    def refresh_site(self) -> bool:
        """Ask the service who the caller is and offer their site; False (with a message) when it cannot."""
        try:
            site = self.client.whoami()["site"]
        except ServiceError as error:
            self._say(token_problem(error) or html.escape(str(error)), error=True)
            return False
        except CloudMRIError as error:
            self._say(html.escape(str(error)), error=True)
            return False
        if site is None:
            self._say("Your account belongs to no site, so the service cannot file an upload: ask an admin to "
                      "add you to a site's group.", error=True)
            return False
        self.site.options = [site]
        self.site.value = site
        return True

    def start(self) -> None:
        """Run :meth:`upload` in a thread, so the notebook stays usable while large files go up."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self.upload, name="cloudmri-upload", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the upload :meth:`start` began."""
        if self._thread is not None:
            self._thread.join(timeout)

    def upload(self) -> list[str]:
        """Validate every chosen file, then de-identify and upload them; returns the new dataset IDs.

        Nothing is sent when a file is invalid, the policy file is bad or the service refuses the token; the
        form keeps its choices, so pressing the button again retries.
        """
        self.busy, self.button.disabled = True, True
        try:
            return self._upload()
        finally:
            self.busy, self.button.disabled = False, False

    def _upload(self) -> list[str]:
        self._say("")
        self.dataset_ids = []
        sources = self._sources()
        if sources is None:
            return []
        results = []
        for source in sources:
            source.status.value = "validating…"
            results.append(self._validate(source))
        self.results = results
        invalid = [r["file"] for r in results if not r["valid"]]
        if invalid:
            self._say(f"Nothing was uploaded: {len(invalid)} of {len(results)} file(s) are not valid MRD "
                      f"({html.escape(', '.join(invalid))}). Convert raw data with <code>cloudmri ingest</code>, "
                      "or leave those files out, and try again.", error=True)
            return []
        policy = self._policy()
        if policy is False or not (self.site.value or self.refresh_site()):
            return []
        uploaded = []
        for index, source in enumerate(sources):
            try:
                dataset = self._send(source, policy)
            except ServiceError as error:
                problem = token_problem(error)
                findings = error.detail.get("findings", []) if isinstance(error.detail, dict) else []
                self._fail(index, source, str(_detail(error)), findings)
                self._say(problem or f"{html.escape(source.name)} was refused: "
                          f"{html.escape(str(_detail(error)))}. Files before it were uploaded.", error=True)
                break
            except CloudMRIError as error:
                self._fail(index, source, str(error), [])
                self._say(html.escape(str(error)), error=True)
                break
            uploaded.append(dataset["id"])
            self.results = [*self.results[:index], {**self.results[index], "dataset_id": dataset["id"]},
                            *self.results[index + 1:]]
            source.status.value = f"dataset <code>{dataset['id']}</code>"
        self.dataset_ids = uploaded
        if len(uploaded) == len(sources):
            self._say(f"Uploaded {len(uploaded)} file(s) to site {html.escape(self.site.value)}.")
        return uploaded

    def _sources(self) -> list[_Source] | None:
        """The chosen files (browser files written to a scratch folder), each with a fresh row; None if none."""
        paths: list[tuple[str, Path]] = []
        for index, item in enumerate(self.files.value):
            name = Path(item["name"]).name or "upload.h5"
            target = Path(self._scratch.name) / "picked" / str(index) / name  # two picks may share a name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes(item["content"]))
            paths.append((name, target))
        typed = self.path.value.strip()
        if typed:
            where = Path(typed).expanduser()
            if where.is_dir():
                found = sorted(p for p in where.iterdir() if p.is_file() and p.suffix.lower() in MRD_SUFFIXES)
                if not found:
                    self._say(f"The folder {html.escape(str(where))} has no {' or '.join(MRD_SUFFIXES)} files.",
                              error=True)
                    return None
                paths += [(p.name, p) for p in found]
            elif where.is_file():
                paths.append((where.name, where))
            else:
                self._say(f"There is no file or folder {html.escape(str(where))} on the server: check the path.",
                          error=True)
                return None
        if not paths:
            self._say("Pick files, or type the path of a file or folder on the server, first.", error=True)
            return None
        sources = [_Source(name, path, widgets.IntProgress(0, min=0, max=100, description=name[:24],
                                                           style={"description_width": "initial"}),
                           widgets.HTML()) for name, path in paths]
        self.rows.children = [widgets.HBox([s.progress, s.status]) for s in sources]
        return sources

    def _validate(self, source: _Source) -> dict:
        from cloudmri_kernel.mrd.validate import validate_file

        findings = [f.to_dict() for f in validate_file(source.path)]
        errors = sum(f["severity"] == "error" for f in findings)
        if errors:
            source.progress.bar_style = "danger"
            source.status.value = f"invalid ({errors} error(s)), not sent{_findings_html(findings)}"
        else:
            warned = f" ({len(findings)} warning(s))" if findings else ""
            source.status.value = f"valid{warned}, waiting{_findings_html(findings)}"
        return {"file": source.name, "valid": not errors, "findings": findings, "dataset_id": None, "error": None}

    def _policy(self):
        """The chosen policy; None for no de-identification, False (with a message) for a bad policy file."""
        from cloudmri_kernel.mrd.anonymize import AnonymizationPolicy

        if self.policy.value == "none":
            return None
        if self.policy.value == "default":
            return AnonymizationPolicy()
        try:
            return AnonymizationPolicy.from_file(Path(self.policy_file.value.strip()).expanduser())
        except CloudMRIError as error:
            self._say(f"Nothing was uploaded: {html.escape(str(error))}.", error=True)
            return False

    def _send(self, source: _Source, policy) -> dict:
        from cloudmri_kernel.mrd.anonymize import anonymize_file

        sent = source.path
        if policy is not None:
            source.status.value = "de-identifying…"
            sent = Path(self._scratch.name) / "deidentified" / source.name
            sent.parent.mkdir(exist_ok=True)
            anonymize_file(source.path, sent, site=self.site.value, policy=policy)
        source.status.value = "uploading…"

        def progress(done: int, total: int) -> None:
            source.progress.value = round(100 * done / total) if total else 100

        label = None if policy is None else ("custom" if self.policy.value == "file" else "default")
        dataset = self.client.upload(sent, progress=progress, deidentified_with=label)
        source.progress.value, source.progress.bar_style = 100, "success"
        return dataset

    def _fail(self, index: int, source: _Source, error: str, findings: list[dict]) -> None:
        source.progress.bar_style = "danger"
        source.status.value = f"not uploaded: {html.escape(error)}{_findings_html(findings)}"
        self.results = [*self.results[:index], {**self.results[index], "error": error,
                                                **({"findings": findings} if findings else {})},
                        *self.results[index + 1:]]
