"""The blinded reader study in the browser: a reader scores their cases, the study's creator sees the statistics.

:class:`StudySetup` lets a researcher or admin pick datasets, the series of each to compare, and the readers.
:class:`StudyReader` shows the reader's next unscored case (opaque code, the viewer, one 1-5 Likert scale per
criterion) and saves with the case's version, so a second tab's save is caught and shown, never overwritten.
:class:`StudyResults` shows the creator the per-method means with 95 % confidence intervals (table and plot), the
weighted kappa of every reader pair and each reader's progress. :class:`ReaderStudyApp` picks a study and shows
whichever of the two the caller's role allows, and the setup form to those who may create studies. All of it goes
through :class:`cloudmri_kernel.client.Client`; the statistics are :mod:`cloudmri_kernel.quality.reader_study`,
computed by the service.

Example:
    >>> from cloudmri_widgets.reader_study import ReaderStudyApp  # doctest: +SKIP
    >>> ReaderStudyApp()  # doctest: +SKIP
"""

from __future__ import annotations

import html
import io
from typing import TYPE_CHECKING

import ipywidgets as widgets
import traitlets

from cloudmri_kernel.client import ServiceError
from cloudmri_kernel.errors import CloudMRIError
from cloudmri_widgets.upload import token_problem
from cloudmri_widgets.viewer import Viewer

if TYPE_CHECKING:
    from cloudmri_kernel.client import Client

#: What each criterion asks, and what 1 and 5 mean (criteria a study names otherwise are shown by name).
QUESTIONS = {
    "overall": "Overall image quality (1 non-diagnostic … 5 excellent)",
    "artifacts": "Artifacts (1 severe … 5 none)",
    "snr": "Signal-to-noise ratio (1 very noisy … 5 excellent)",
    "confidence": "Diagnostic confidence (1 none … 5 full)",
}
LIKERT = ["1", "2", "3", "4", "5"]


def _default_client(client: Client | None) -> Client:
    if client is None:
        from cloudmri_kernel.notebook import default_client
        return default_client()
    return client


def _problem(error: CloudMRIError) -> str:
    if isinstance(error, ServiceError):
        return token_problem(error) or html.escape(str(error))
    return html.escape(str(error))


def _note(text: str, error: bool = False) -> str:
    colour = "#b00020" if error else "inherit"
    return f"<div style='color:{colour}'>{text}</div>" if text else ""


class StudyReader(widgets.VBox):
    """One reader's blinded cases of a study: the image, a Likert scale per criterion, Save & next.

    Args:
        client: a :class:`~cloudmri_kernel.client.Client`; None for the notebook's default client.
        study: the study as :meth:`Client.studies` lists it (``id``, ``name``, ``criteria``).

    Attributes:
        cases: the reader's cases in their blinded order (codes, versions, scores), as the service last sent them.
        scales: one RadioButtons (1-5) per criterion.
    """

    index = traitlets.Int(0, help="the position of the case shown")
    finished = traitlets.Bool(False, help="every case has been scored")

    def __init__(self, client: Client | None, study: dict, **kwargs):
        self.client = _default_client(client)
        self.study = study
        self.cases: list[dict] = []
        self.heading = widgets.HTML()
        self.image = widgets.Box(layout=widgets.Layout(min_height="200px"))
        self.scales = {criterion: widgets.RadioButtons(options=LIKERT, value=None, orientation="horizontal",
                                                       layout=widgets.Layout(width="auto"))
                       for criterion in study["criteria"]}
        questions = []
        for criterion, scale in self.scales.items():
            scale.add_class(f"likert-{criterion}")
            scale.observe(self._check, names="value")
            questions.append(widgets.VBox([widgets.HTML(f"<b>{html.escape(QUESTIONS.get(criterion, criterion))}"
                                                        "</b>"), scale]))
        self.previous_button = widgets.Button(description="Previous", icon="arrow-left")
        self.save_button = widgets.Button(description="Save & next", icon="save", button_style="primary",
                                          disabled=True)
        self.message = widgets.HTML()
        self.message.add_class("study-message")
        self.previous_button.on_click(lambda _button: self.show(max(self.index - 1, 0)))
        self.save_button.on_click(lambda _button: self.save())
        super().__init__([self.heading, self.image, *questions,
                          widgets.HBox([self.previous_button, self.save_button]), self.message], **kwargs)
        self.reload()

    def reload(self) -> None:
        """Fetch the cases again and show the first one not yet scored (or the last one when all are)."""
        try:
            self.cases = self.client.study_cases(self.study["id"])
        except CloudMRIError as error:
            self.message.value = _note(_problem(error), error=True)
            return
        unscored = [case["position"] for case in self.cases if case["version"] == 0]
        self.finished = not unscored
        self.show(unscored[0] if unscored else len(self.cases) - 1)

    def show(self, index: int) -> None:
        """Show case ``index``: its image and its stored scores, if any."""
        self.index = index
        case = self.cases[index]
        done = sum(c["version"] > 0 for c in self.cases)
        self.heading.value = (f"<h3>Case {index + 1} of {len(self.cases)}: <code>{case['code']}</code></h3>"
                              f"<p class='study-progress'>{done} of {len(self.cases)} scored</p>")
        try:
            volume = self.client.study_case_images(self.study["id"], case["code"])
        except CloudMRIError as error:
            self.image.children = ()
            self.message.value = _note(_problem(error), error=True)
        else:
            self.image.children = (Viewer(volume, titles=[case["code"]], size=320),)
        for criterion, scale in self.scales.items():
            stored = case["scores"].get(criterion)
            scale.value = None if stored is None else str(stored)
        self.previous_button.disabled = index == 0
        self._check()

    def _check(self, _change=None) -> None:
        self.save_button.disabled = any(scale.value is None for scale in self.scales.values())

    def save(self) -> bool:
        """Save the shown case's scores; on success move to the next unscored case. False when not saved."""
        case = self.cases[self.index]
        if any(scale.value is None for scale in self.scales.values()):
            self.message.value = _note("Choose a score for every question first.", error=True)
            return False
        scores = {criterion: int(scale.value) for criterion, scale in self.scales.items()}
        try:
            saved = self.client.score_case(self.study["id"], case["code"], scores, case["version"])
        except ServiceError as error:
            if error.status == 409 and isinstance(error.detail, dict):
                case.update(version=error.detail["version"], scores=error.detail["scores"])
                self.show(self.index)
                self.message.value = _note(
                    f"Case {case['code']} was saved meanwhile in another tab or window; its stored scores are "
                    "shown now. Check them and press Save & next again to replace them.", error=True)
            else:
                self.message.value = _note(f"Not saved: {_problem(error)}", error=True)
            return False
        except CloudMRIError as error:
            self.message.value = _note(f"Not saved: {_problem(error)}", error=True)
            return False
        self.cases[self.index] = saved
        unscored = [c["position"] for c in self.cases if c["version"] == 0]
        self.message.value = _note(f"Saved case {html.escape(saved['code'])}.")
        if unscored:
            self.show(next((p for p in unscored if p > self.index), unscored[0]))
        else:
            self.finished = True
            self.show(self.index)
            self.message.value = _note(f"All {len(self.cases)} cases are scored. Thank you! You can still go back "
                                       "and change a score until the study is closed.")
        return True


def means_plot(summary: list[dict], criteria: list[str]) -> bytes:
    """A PNG: per criterion, each method's mean with its 95 % confidence interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    methods = sorted({row["method"] for row in summary})
    figure = Figure(figsize=(1.8 + 1.6 * len(criteria), 3.6), dpi=100)
    axes = figure.add_subplot()
    width = 0.8 / max(len(methods), 1)
    for m, method in enumerate(methods):
        rows = {row["criterion"]: row for row in summary if row["method"] == method}
        xs, means, below, above = [], [], [], []
        for c, criterion in enumerate(criteria):
            row = rows.get(criterion)
            if row is None:
                continue
            xs.append(c - 0.4 + width * (m + 0.5))
            means.append(row["mean"])
            below.append(row["mean"] - row["low"] if row["low"] is not None else 0)
            above.append(row["high"] - row["mean"] if row["high"] is not None else 0)
        axes.errorbar(xs, means, yerr=[below, above], fmt="o", capsize=4, label=method)
    axes.set_xticks(range(len(criteria)), criteria)
    axes.set_ylim(0.5, 5.5)
    axes.set_ylabel("mean score (1-5), 95 % CI")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _number(value: float | None, digits: int = 2) -> str:
    return "&ndash;" if value is None else f"{value:.{digits}f}"


def _table(css: str, headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class StudyResults(widgets.VBox):
    """The unblinded results of a study for its creator: tables, a plot of means with CIs, reader agreement.

    Args:
        client: a :class:`~cloudmri_kernel.client.Client`; None for the notebook's default client.
        study_id: the study.
        interval: ``bootstrap`` (percentile, over cases) or ``t`` (Student's t over case means).
    """

    def __init__(self, client: Client | None, study_id: str, interval: str = "bootstrap", **kwargs):
        self.client = _default_client(client)
        self.study_id = study_id
        self.results: dict | None = None
        self.interval = widgets.ToggleButtons(options=[("bootstrap CI", "bootstrap"), ("t CI", "t")],
                                              value=interval)
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.summary = widgets.HTML()
        self.plot = widgets.Image(format="png", layout=widgets.Layout(width="auto"))  # the figure's own size
        self.agreement = widgets.HTML()
        self.progress = widgets.HTML()
        self.interval.observe(lambda _change: self.refresh(), names="value")
        self.refresh_button.on_click(lambda _button: self.refresh())
        super().__init__([widgets.HBox([self.interval, self.refresh_button]), self.summary, self.plot,
                          self.agreement, self.progress], **kwargs)
        self.refresh()

    def refresh(self) -> None:
        try:
            self.results = self.client.study_results(self.study_id, interval=self.interval.value)
        except CloudMRIError as error:
            self.summary.value = _note(_problem(error), error=True)
            return
        results = self.results
        criteria = results["study"]["criteria"]
        kind = "percentile bootstrap over cases" if results["interval"] == "bootstrap" else "Student's t over cases"
        rows = [[html.escape(r["method"]), html.escape(r["criterion"]), str(r["n_cases"]), str(r["n_ratings"]),
                 _number(r["mean"]), f"{_number(r['low'])} &ndash; {_number(r['high'])}"]
                for r in results["summary"]]
        self.summary.value = (f"<h3>{html.escape(results['study']['name'])}: scores per method</h3>"
                              f"<p>Mean of case means with a 95 % confidence interval ({kind}).</p>"
                              + (_table("study-summary", ["Method", "Criterion", "Cases", "Ratings", "Mean",
                                                          "95 % CI"], rows)
                                 if rows else "<p>No scores yet.</p>"))
        self.plot.value = means_plot(results["summary"], criteria) if rows else b""
        self.plot.layout.display = "" if rows else "none"
        pairs = [[html.escape(p["reader_a"]), html.escape(p["reader_b"]), html.escape(p["criterion"]), str(p["n"]),
                  _number(p["kappa"], 3)] for p in results["agreement"]]
        means = ", ".join(f"{html.escape(c)} {_number(k, 3)}" for c, k in results["mean_kappa"].items())
        alphas = ", ".join(f"{html.escape(c)} {_number(a, 3)}" for c, a in results.get("alpha", {}).items())
        self.agreement.value = (f"<h3>Inter-reader agreement</h3><p>Krippendorff's alpha (ordinal, every reader, "
                                f"cases scored by two or more): <span class='study-alpha'>{alphas or '&ndash;'}"
                                f"</span>.</p><p>Cohen's weighted kappa "
                                f"({results['kappa_weights']} weights) per reader pair on the cases both scored; "
                                f"mean over pairs: {means or '&ndash;'}.</p>"
                                + _table("study-kappa", ["Reader", "Reader", "Criterion", "Cases", "Kappa"], pairs))
        self.progress.value = ("<h3>Progress</h3>" + _table(
            "study-progress-table", ["Reader", "Scored", "Cases"],
            [[html.escape(p["reader"]), str(p["scored"]), str(p["total"])] for p in results["progress"]]))


class StudySetup(widgets.VBox):
    """A form to set up a blinded study: datasets, the series of each to compare, readers (``recon`` or ``admin``).

    Args:
        client: a :class:`~cloudmri_kernel.client.Client`; None for the notebook's default client.
        on_created: called with the new study (as :meth:`Client.create_study` returns it).
    """

    def __init__(self, client: Client | None = None, on_created=None, **kwargs):
        self.client = _default_client(client)
        self.on_created = on_created
        self.name = widgets.Text(description="Name", placeholder="e.g. GRAPPA vs CS, knee R4",
                                 layout=widgets.Layout(width="40em"))
        self.datasets = widgets.SelectMultiple(description="Datasets", rows=6, layout=widgets.Layout(width="40em"))
        self.series = widgets.VBox()
        self.readers = widgets.Text(description="Readers", placeholder="user names, comma-separated",
                                    layout=widgets.Layout(width="40em"))
        self.create_button = widgets.Button(description="Create study", icon="plus", button_style="primary")
        self.message = widgets.HTML()
        self.choices: dict[str, widgets.Checkbox] = {}
        self.datasets.observe(lambda _change: self._list_series(), names="value")
        self.create_button.on_click(lambda _button: self.create())
        super().__init__([self.name, self.datasets, widgets.HTML("<b>Series to compare</b> (every reader scores "
                                                                 "each, blinded)"), self.series, self.readers,
                          self.create_button, self.message], **kwargs)
        try:
            self.datasets.options = [(d["filename"] + f" ({d['id'][:8]})", d["id"]) for d in self.client.datasets()]
        except CloudMRIError as error:
            self.message.value = _note(_problem(error), error=True)

    def _list_series(self) -> None:
        choices: dict[str, widgets.Checkbox] = {}
        try:
            for dataset_id in self.datasets.value:
                for series in self.client.series_of(dataset_id):
                    label = f"{dataset_id[:8]} · {series['method']} · {series['created_at'][:16].replace('T', ' ')}"
                    choices[series["id"]] = self.choices.get(series["id"]) or widgets.Checkbox(
                        value=True, description=label, indent=False, layout=widgets.Layout(width="40em"))
        except CloudMRIError as error:
            self.message.value = _note(_problem(error), error=True)
        self.choices = choices
        self.series.children = tuple(choices.values()) or (widgets.HTML("<i>No series: reconstruct the chosen "
                                                                        "datasets first.</i>"),)

    def create(self) -> dict | None:
        """Create the study from the form; the new study, or None with the reason in ``message``."""
        series = [series_id for series_id, box in self.choices.items() if box.value]
        readers = [name.strip() for name in self.readers.value.split(",") if name.strip()]
        missing = [what for what, empty in (("a name", not self.name.value.strip()), ("series", not series),
                                            ("readers", not readers)) if empty]
        if missing:
            self.message.value = _note(f"Give {', '.join(missing)} first.", error=True)
            return None
        try:
            study = self.client.create_study(self.name.value.strip(), series, readers)
        except CloudMRIError as error:
            self.message.value = _note(f"Not created: {_problem(error)}", error=True)
            return None
        self.message.value = _note(f"Study <b>{html.escape(study['name'])}</b> created: {len(readers)} reader(s) "
                                   f"× {study['series_count']} series. Readers find it in this app.")
        if self.on_created is not None:
            self.on_created(study)
        return study


class ReaderStudyApp(widgets.VBox):
    """The reader-study dashboard: pick one of your studies; read it blind, or see its results if you made it.
    Callers who may create studies (``recon`` or ``admin``) also get the setup form."""

    def __init__(self, client: Client | None = None, **kwargs):
        self.client = _default_client(client)
        self.studies: dict[str, dict] = {}
        self.picker = widgets.Dropdown(description="Study", layout=widgets.Layout(width="40em"))
        self.body = widgets.VBox()
        self.message = widgets.HTML()
        self.setup: StudySetup | None = None
        self._quiet = False  # while reload() sets the picker, which shows the study itself
        self.picker.observe(self._picked, names="value")
        children = [self.picker, self.message, self.body]
        try:
            scopes = set(self.client.whoami()["scopes"])
        except CloudMRIError as error:
            self.message.value = _note(_problem(error), error=True)
            scopes = set()
        if scopes & {"recon", "admin"}:
            self.setup = StudySetup(self.client, on_created=lambda study: self.reload(study["id"]))
            setup = widgets.Accordion(children=[self.setup])
            setup.set_title(0, "Set up a new study")
            setup.selected_index = None
            children.append(setup)
        super().__init__(children, **kwargs)
        self.reload()

    def _picked(self, _change) -> None:
        if not self._quiet:
            self.show_study()

    def reload(self, select: str | None = None) -> None:
        """List the caller's studies again and show ``select`` (default the newest)."""
        try:
            self.studies = {study["id"]: study for study in self.client.studies()}
        except CloudMRIError as error:
            self.message.value = _note(_problem(error), error=True)
            return
        if not self.studies:
            self.message.value = _note("You have no reader studies: none was set up with you as a reader.")
            return
        self.message.value = ""
        self._quiet = True
        try:
            self.picker.options = [(f"{s['name']} ({s['role']}, {s['my_scored']}/{s['my_cases']} scored)"
                                    if s["my_cases"] else f"{s['name']} ({s['role']})", s["id"])
                                   for s in self.studies.values()]
            self.picker.value = select if select in self.studies else next(iter(self.studies))
        finally:
            self._quiet = False
        self.show_study()

    def show_study(self) -> None:
        """Show the picked study: the blinded reading view, its results, or both in tabs."""
        study = self.studies.get(self.picker.value)
        if study is None:
            self.body.children = ()
            return
        views = []
        if study["my_cases"]:
            views.append(("Read (blinded)", StudyReader(self.client, study)))
        if study["role"] != "reader":
            views.append(("Results", StudyResults(self.client, study["id"])))
        if len(views) == 1:
            self.body.children = (views[0][1],)
        else:
            tabs = widgets.Tab(children=[view for _, view in views])
            for i, (title, _) in enumerate(views):
                tabs.set_title(i, title)
            self.body.children = (tabs,)
