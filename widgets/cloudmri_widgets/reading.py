"""The radiologist's reading room: the worklist, the study's newest series in the labeler, a structured report.

:class:`ReadingRoom` lists the caller's assignments (``GET /worklist``: highest priority first, then oldest),
filtered by status and minimum priority. Opening one marks it in progress, shows the dataset's newest series in
the :class:`~cloudmri_widgets.labeler.Labeler` (with the reader's own label set loaded, if any) and the report
form: a template per exam type (:data:`TEMPLATES`, whose sections pre-fill the findings), findings, impression,
*Save draft*, *Sign* (the service locks the report and records the SHA-256 of its content, which the form then
shows, read-only) and *Send back* with a reason. *Previous*/*Next* (or Alt+Left/Alt+Right) move through the
worklist, saving a changed draft first.

A refusal never loses what was typed: an expired token, a study taken off the reader's worklist meanwhile, a
report signed meanwhile in another tab and a draft saved meanwhile in another tab are each explained in the
widget, with the form left as it was. Every save and the sign-off name the report's ``version`` as the form last
saw it; the service refuses (409) when the stored report has moved on, and the widget shows the stored text
beside the reader's own. ROIs are saved the same way (see :meth:`Labeler.save`).

Example:
    >>> from cloudmri_widgets import ReadingRoom  # doctest: +SKIP
    >>> ReadingRoom()  # doctest: +SKIP
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import anywidget
import ipywidgets as widgets
import traitlets

from cloudmri_kernel.client import ServiceError
from cloudmri_kernel.errors import CloudMRIError
from cloudmri_widgets.labeler import Labeler
from cloudmri_widgets.upload import token_problem

if TYPE_CHECKING:
    from cloudmri_kernel.client import Client

#: Report templates per exam type: the service's template name -> its title and the findings sections that
#: pre-fill the findings text (section name -> default wording).
TEMPLATES: dict[str, dict] = {
    "generic": {"title": "Generic", "sections": {"Technique": "", "Comparison": "None.", "Findings": ""}},
    "brain-mri": {"title": "Brain MRI", "sections": {
        "Technique": "Multiplanar multisequence MRI of the brain.", "Comparison": "None.",
        "Ventricles and sulci": "", "White matter": "", "Grey matter and basal ganglia": "",
        "Posterior fossa": "", "Extra-axial spaces": "", "Vessels (flow voids)": ""}},
    "knee-mri": {"title": "Knee MRI", "sections": {
        "Technique": "Multiplanar multisequence MRI of the knee.", "Comparison": "None.", "Menisci": "",
        "Cruciate ligaments": "", "Collateral ligaments": "", "Extensor mechanism": "", "Cartilage": "",
        "Bone marrow": "", "Joint effusion and synovium": ""}},
}
STATUSES = ("assigned", "in_progress", "done", "sent_back")
#: The labels a reader draws with when the project gives none.
VOCABULARY = {"lesion": "#e6194b", "artifact": "#4363d8"}

KEYS_ESM = """
export default {
  render({ model, el }) {
    // Alt+Left/Right move through the worklist from anywhere on the page (plain arrows belong to the text and
    // the labeler); the listener goes with the widget.
    const onKey = (event) => {
      if (!event.altKey || event.ctrlKey || event.metaKey) return;
      const step = { ArrowRight: "next", ArrowLeft: "previous" }[event.key];
      if (step) { event.preventDefault(); model.send({ event: step }); }
    };
    document.addEventListener("keydown", onKey);
    el.style.display = "none";
    return () => document.removeEventListener("keydown", onKey);
  },
};
"""


class ShortcutKeys(anywidget.AnyWidget):
    """An invisible widget that sends ``{"event": "next"}`` / ``{"event": "previous"}`` on Alt+Right/Alt+Left."""

    _esm = KEYS_ESM


def template_text(template: str) -> str:
    """The findings text a template pre-fills: one ``Section: wording`` line per section."""
    return "\n".join(f"{section}: {wording}".rstrip() for section, wording in
                     TEMPLATES[template]["sections"].items())


def _default_client(client: Client | None) -> Client:
    if client is None:
        from cloudmri_kernel.notebook import default_client
        return default_client()
    return client


def _detail(error: ServiceError) -> str:
    detail = error.detail.get("message", error.detail) if isinstance(error.detail, dict) else error.detail
    return html.escape(str(detail))


def _note(text: str, error: bool = False) -> str:
    colour = "#b00020" if error else "inherit"
    return f"<div style='color:{colour}'>{text}</div>" if text else ""


class NotOnWorklist(CloudMRIError):
    """The assignment shown is no longer the caller's (reassigned or removed meanwhile)."""


class ChangedMeanwhile(CloudMRIError):
    """The caller's report was saved or signed elsewhere since the form loaded it."""


class ReadingRoom(widgets.VBox):
    """The worklist, the opened study's newest series in the labeler, and its structured report.

    Args:
        client: a :class:`~cloudmri_kernel.client.Client` with the ``report`` and ``label`` scopes (a
            radiologist's); None for the notebook's default client.
        vocabulary: the labels ROIs are drawn with (see :class:`~cloudmri_widgets.labeler.Labeler`).
        label_set: the name the reader's ROIs are saved under, per series.

    Attributes:
        assignments: the worklist rows shown (after the filters), in the service's order.
        assignment: the assignment opened, or None.
        report: the caller's stored report of the opened study (as the service last sent it), or None.
        labeler: the labeler of the opened study's newest series, or None (no series yet).
        locked: the report is signed; the form is read-only.
    """

    locked = traitlets.Bool(False, help="the report shown is signed and the form read-only")

    def __init__(self, client: Client | None = None, vocabulary: Mapping[str, str] | Sequence[str] = VOCABULARY,
                 label_set: str = "reading", **kwargs):
        self.client = _default_client(client)
        self.vocabulary, self.label_set = vocabulary, label_set
        self.assignments: list[dict] = []
        self.assignment: dict | None = None
        self.report: dict | None = None
        self.labeler: Labeler | None = None
        self.series_id: str | None = None
        self._datasets: dict[str, dict] = {}
        self._me: str | None = None

        self.status_filter = widgets.Dropdown(options=[("all", None), *[(s.replace("_", " "), s) for s in STATUSES]],
                                              value=None, description="Status")
        self.priority_filter = widgets.BoundedIntText(value=0, min=0, max=10, description="Priority ≥",
                                                      layout=widgets.Layout(width="160px"))
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.worklist = widgets.Select(rows=8, layout=widgets.Layout(width="100%"))
        self.open_button = widgets.Button(description="Open", icon="folder-open", button_style="primary")
        self.table = widgets.HTML()
        self.heading = widgets.HTML()
        self.image = widgets.Box(layout=widgets.Layout(min_height="120px"))
        self.save_labels_button = widgets.Button(description="Save ROIs", icon="save", disabled=True)
        self.template = widgets.Dropdown(options=[(t["title"], name) for name, t in TEMPLATES.items()],
                                         value="generic", description="Template")
        self.findings = widgets.Textarea(description="Findings", layout=widgets.Layout(width="100%", height="180px"))
        self.impression = widgets.Textarea(description="Impression",
                                           layout=widgets.Layout(width="100%", height="80px"))
        self.save_button = widgets.Button(description="Save draft", icon="save")
        self.sign_button = widgets.Button(description="Sign", icon="lock", button_style="success")
        self.reason = widgets.Text(placeholder="why the study goes back (required)", description="Reason")
        self.send_back_button = widgets.Button(description="Send back", icon="undo", button_style="warning")
        self.previous_button = widgets.Button(description="Previous", icon="arrow-left", tooltip="Alt+Left")
        self.next_button = widgets.Button(description="Next", icon="arrow-right", tooltip="Alt+Right")
        self.signature = widgets.HTML()
        self.message = widgets.HTML()
        self.message.add_class("reading-message")
        self.shortcuts = ShortcutKeys()
        self._shown_template = "generic"

        self.status_filter.observe(lambda _change: self.refresh(), names="value")
        self.priority_filter.observe(lambda _change: self.refresh(), names="value")
        self.refresh_button.on_click(lambda _button: self.refresh())
        self.open_button.on_click(lambda _button: self.worklist.value and self.open_study(self.worklist.value))
        self.save_labels_button.on_click(lambda _button: self.save_labels())
        self.template.observe(self._template_chosen, names="value")
        self.save_button.on_click(lambda _button: self.save_draft())
        self.sign_button.on_click(lambda _button: self.sign())
        self.send_back_button.on_click(lambda _button: self.send_back(self.reason.value))
        self.previous_button.on_click(lambda _button: self.step(-1))
        self.next_button.on_click(lambda _button: self.step(1))
        self.shortcuts.on_msg(self._on_key)
        self.observe(self._lock, names="locked")

        study = widgets.VBox([self.heading, self.image, self.save_labels_button])
        form = widgets.VBox([self.template, self.findings, self.impression,
                             widgets.HBox([self.save_button, self.sign_button]), self.signature,
                             widgets.HBox([self.reason, self.send_back_button])],
                            layout=widgets.Layout(min_width="420px", flex="1"))
        super().__init__([widgets.HBox([self.status_filter, self.priority_filter, self.refresh_button]),
                          widgets.HBox([self.worklist, self.open_button]), self.table,
                          widgets.HBox([study, form]),
                          widgets.HBox([self.previous_button, self.next_button]), self.message, self.shortcuts],
                         **kwargs)
        self._lock()
        self.refresh()

    # ---- the worklist

    def refresh(self) -> bool:
        """Fetch the worklist again (with the filters); False when the service refused."""
        try:
            rows = self.client.worklist(self.status_filter.value)
            for row in rows:
                if row["dataset_id"] not in self._datasets:
                    self._datasets[row["dataset_id"]] = self.client.dataset(row["dataset_id"])
        except CloudMRIError as error:
            self._problem("Worklist not loaded", error)
            return False
        # The service sorts by priority (highest first), then age; the filter keeps that order.
        self.assignments = [row for row in rows if row["priority"] >= self.priority_filter.value]
        self.worklist.options = [(self._row_label(row), row["id"]) for row in self.assignments]
        shown = self.assignment["id"] if self.assignment else None
        self.worklist.value = shown if any(row["id"] == shown for row in self.assignments) else None
        self.table.value = self._table()
        return True

    def _row_label(self, row: dict) -> str:
        dataset = self._datasets[row["dataset_id"]]
        return (f"P{row['priority']} · {row['status'].replace('_', ' ')} · {dataset.get('subject') or '-'} · "
                f"{dataset.get('sequence') or dataset['filename']} · {row['created_at'][:10]}")

    def _table(self) -> str:
        if not self.assignments:
            return "<p class='reading-empty'>No studies on your worklist match the filters.</p>"
        head = "".join(f"<th>{h}</th>" for h in ("Priority", "Status", "Subject", "Dataset", "Assigned by",
                                                  "Since"))
        body = ""
        for row in self.assignments:
            dataset = self._datasets[row["dataset_id"]]
            cells = (row["priority"], row["status"].replace("_", " "), dataset.get("subject") or "-",
                     dataset["filename"], row["assigned_by"], row["created_at"][:16].replace("T", " "))
            body += "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"
        return f"<table class='reading-worklist'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    # ---- opening a study

    def open_study(self, assignment_id: str) -> bool:
        """Open an assignment of the worklist: mark it in progress, show its newest series and the report."""
        row = next((r for r in self.assignments if r["id"] == assignment_id), None)
        if row is None:
            self.message.value = _note(f"Assignment {html.escape(assignment_id)} is not on your worklist (with "
                                       "these filters).", error=True)
            return False
        try:
            if row["status"] == "assigned":
                row.update(self.client.update_assignment(row["id"], "in_progress"))
            self.report = self._own_report(row["dataset_id"])
            series = sorted(self.client.series_of(row["dataset_id"]), key=lambda s: s["created_at"])
            image = self.client.images(series[-1]["id"]) if series else None
        except CloudMRIError as error:
            self._refused("Not opened", error)
            return False
        self.assignment = row
        dataset = self._datasets[row["dataset_id"]]
        self.heading.value = (f"<h3>{html.escape(dataset.get('subject') or '-')} · "
                              f"{html.escape(dataset['filename'])} (priority {row['priority']})</h3>")
        if image is None:
            self.labeler, self.series_id = None, None
            self.image.children = (widgets.HTML("<p>No series has been reconstructed from this dataset yet: "
                                                "you can still report or send it back.</p>"),)
        else:
            self.series_id = series[-1]["id"]
            self.labeler = Labeler(image, self.vocabulary, size=384)
            if not self.labeler.load(self.client, self.series_id, self.label_set):
                self.labeler.message = ""
            self.image.children = (self.labeler,)
        self.save_labels_button.disabled = self.labeler is None
        self._show_report()
        self.worklist.value = row["id"]
        self.message.value = _note(f"Opened study {self.position + 1} of {len(self.assignments)}.")
        return True

    @property
    def position(self) -> int:
        """The opened assignment's position in the worklist shown, or -1."""
        ids = [row["id"] for row in self.assignments]
        return ids.index(self.assignment["id"]) if self.assignment and self.assignment["id"] in ids else -1

    def step(self, offset: int) -> bool:
        """Open the study ``offset`` places on (+1 next, -1 previous), saving a changed draft first."""
        if not self.assignments:
            return False
        if self.assignment is not None and self.dirty and not self.save_draft():
            return False
        target = self.position + offset if self.position >= 0 else 0
        if not 0 <= target < len(self.assignments):
            self.message.value = _note("This is the " + ("last" if offset > 0 else "first") + " study of the "
                                       "worklist.")
            return False
        return self.open_study(self.assignments[target]["id"])

    def _on_key(self, _widget, content: dict, _buffers) -> None:
        if content.get("event") in ("next", "previous"):
            self.step(1 if content["event"] == "next" else -1)

    def _own_report(self, dataset_id: str) -> dict | None:
        """The caller's newest report of a dataset (``GET /datasets/{id}/reports``; the client has no method)."""
        if self._me is None:
            self._me = self.client.whoami()["user"]
        reports = self.client.reports(dataset_id)
        own = [r for r in reports if r["author"] == self._me]
        return own[-1] if own else None

    # ---- the report form

    def _show_report(self) -> None:
        report = self.report
        template = report["template"] if report and report["template"] in TEMPLATES else "generic"
        self._shown_template = template
        with self.template.hold_trait_notifications():
            self.template.value = template
        self.findings.value = report["findings"] if report else template_text(template)
        self.impression.value = report["impression"] if report else ""
        self.reason.value = ""
        self.locked = bool(report and report["status"] == "signed")
        self._lock()

    @property
    def dirty(self) -> bool:
        """The form differs from the stored report (or, with none stored, from the untouched template)."""
        if self.locked:
            return False
        if self.report is None:
            return self.findings.value != template_text(self.template.value) or bool(self.impression.value.strip())
        return (self.findings.value, self.impression.value, self.template.value) != (
            self.report["findings"], self.report["impression"], self.report["template"])

    def _template_chosen(self, change) -> None:
        # Replace the findings only while they are the previous template's untouched text: typing is never lost.
        if self.findings.value == template_text(self._shown_template) or not self.findings.value.strip():
            self.findings.value = template_text(change["new"])
        else:
            self.message.value = _note(f"Template {TEMPLATES[change['new']]['title']}: your findings text is kept "
                                       "as typed (clear it to get the template's sections).")
        self._shown_template = change["new"]

    def save_draft(self) -> bool:
        """Store the form as the caller's draft report of the opened study; False (form untouched) if refused."""
        if self.assignment is None or self.locked:
            return False
        try:
            self._check_still_mine()
            text = {"findings": self.findings.value, "impression": self.impression.value,
                    "template": self.template.value}
            if self.report is None:
                self._check_none_created_meanwhile()
                self.report = self.client.create_report(self.assignment["dataset_id"], **text)
            else:
                self.report = self.client.update_report(self.report["id"], **text, version=self.report["version"])
        except CloudMRIError as error:
            self._refused("Draft not saved", error)
            return False
        self.message.value = _note(f"Draft saved ({self.report['updated_at'][:19].replace('T', ' ')} UTC).")
        return True

    def sign(self) -> bool:
        """Save, sign (the service locks the report and records its SHA-256) and mark the assignment done."""
        if self.assignment is None or self.locked:
            return False
        if not self.impression.value.strip():
            self.message.value = _note("Write an impression before signing.", error=True)
            return False
        if not self.save_draft():
            return False
        try:
            self.report = self.client.sign_report(self.report["id"], version=self.report["version"])
        except CloudMRIError as error:
            self._refused("Not signed", error)
            return False
        self.locked = True
        try:
            self.assignment.update(self.client.update_assignment(self.assignment["id"], "done"))
        except CloudMRIError as error:
            self._refused("The report is signed, but the assignment was not marked done", error)
            return True
        self.refresh()
        self.message.value = _note(f"Signed. SHA-256 {self.report['sha256']}.")
        return True

    def send_back(self, reason: str) -> bool:
        """Send the opened study back to whoever assigned it, with a reason (required)."""
        if self.assignment is None:
            return False
        if not reason.strip():
            self.message.value = _note("Give a reason for sending the study back (e.g. 'motion artifacts: "
                                       "repeat the T2 series').", error=True)
            return False
        try:
            self.assignment.update(self.client.update_assignment(self.assignment["id"], "sent_back", reason))
        except CloudMRIError as error:
            self._refused("Not sent back", error)
            return False
        self.refresh()
        self.message.value = _note(f"Sent back to {html.escape(self.assignment['assigned_by'])}: "
                                   f"{html.escape(reason)}")
        return True

    def save_labels(self) -> bool:
        """Save the reader's ROIs of the opened series as label set ``label_set`` (the labeler says how it went)."""
        if self.labeler is None:
            return False
        return self.labeler.save(self.client, self.series_id, self.label_set)

    def _check_still_mine(self) -> None:
        if not any(row["id"] == self.assignment["id"] for row in self.client.worklist()):
            raise NotOnWorklist(f"study {self.assignment['dataset_id']} is no longer on your worklist (reassigned "
                                "or removed meanwhile)")

    def _check_none_created_meanwhile(self) -> None:
        """Before creating a report: refuse when another tab created the reader's report of this study already."""
        stored = self._own_report(self.assignment["dataset_id"])
        if stored is not None:
            self.report = stored
            what = "signed" if stored["status"] == "signed" else "saved"
            raise ChangedMeanwhile(f"your report of this study was {what} meanwhile in another tab or window")

    def _refused(self, what: str, error: CloudMRIError) -> None:
        """Explain a refusal; the form keeps what was typed. A lost assignment refreshes the worklist."""
        if isinstance(error, NotOnWorklist) or (isinstance(error, ServiceError) and error.status in (403, 404)
                                                and "assignment" in str(error.detail)):
            said = f"the service answered {error.status}: {_detail(error)}" if isinstance(error, ServiceError) \
                else html.escape(str(error))
            self.refresh()
            self.message.value = _note(f"{what}: {said}. Your text is kept in the form; the worklist is "
                                       "refreshed.", error=True)
        elif isinstance(error, ChangedMeanwhile) or (isinstance(error, ServiceError) and error.status == 409):
            if isinstance(error, ServiceError):  # the service's answer holds the stored report
                self.report = error.detail["stored"]
                error = ChangedMeanwhile(f"your report of this study was changed meanwhile in another tab or "
                                         f"window (now version {self.report['version']})")
            stored = self.report
            self.locked = stored["status"] == "signed"
            self.message.value = _note(
                f"{what}: {html.escape(str(error))}. Your text is kept in the form; the stored version "
                f"({html.escape(stored['updated_at'][:19].replace('T', ' '))} UTC) says: findings "
                f"<q>{html.escape(stored['findings'][:300])}</q>, impression "
                f"<q>{html.escape(stored['impression'][:300])}</q>. "
                + ("It is signed and locked." if self.locked
                   else "Press Save draft again to replace it with your text."), error=True)
        elif isinstance(error, ServiceError) and error.status == 400 and "signed and locked" in str(error.detail):
            try:
                self.report = self._own_report(self.assignment["dataset_id"])
            except CloudMRIError:
                pass  # the refusal is what the reader needs to see; the signature shows on the next open
            self.locked = self.report["status"] == "signed"
            self.message.value = _note(f"{what}: the service refused ({_detail(error)}): a signed report cannot "
                                       "be edited. Your text is kept in the form (read-only) to copy into an "
                                       "addendum.", error=True)
        else:
            self._problem(what, error)

    def _problem(self, what: str, error: CloudMRIError) -> None:
        if isinstance(error, ServiceError):
            text = token_problem(error) or f"the service answered {error.status}: {_detail(error)}"
        else:
            text = html.escape(str(error))
        self.message.value = _note(f"{what}: {text} Your text is kept in the form.", error=True)

    def _lock(self, _change=None) -> None:
        for control in (self.template, self.findings, self.impression, self.save_button, self.sign_button):
            control.disabled = self.locked or self.assignment is None
        for control in (self.reason, self.send_back_button):
            control.disabled = self.assignment is None
        self._show_signature()

    def _show_signature(self) -> None:
        report = self.report
        if report and report["status"] == "signed":
            self.signature.value = (f"<p class='reading-signed'>Signed by {html.escape(report['author'])} at "
                                    f"{html.escape(report['signed_at'][:19].replace('T', ' '))} UTC; SHA-256 "
                                    f"<code>{report['sha256']}</code></p>")
        else:
            self.signature.value = ""
