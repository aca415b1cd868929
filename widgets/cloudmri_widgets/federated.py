"""A notebook form to run a federated training experiment across simulated hospital sites and watch it learn.

What ``cloudmri fl simulate EXP.yaml`` does, as a form: a table of sites (one row each: name, coils, noise,
acceleration, sampling pattern, contrast, training and held-out counts; rows can be added and removed), the
experiment's settings (rounds and a round patience, Flower strategy from
:data:`cloudmri_kernel.federated.aggregation.STRATEGIES`, local epochs, learning rate, fewest usable sites per
round, network size) and a **Start** button. The form is
checked by the same constructors the CLI uses (:class:`~cloudmri_kernel.federated.sites.SiteConfig`,
:class:`~cloudmri_kernel.federated.experiment.ExperimentConfig`) before anything starts.

The experiment runs with :func:`cloudmri_kernel.federated.experiment.run_experiment` (every site a Flower
ClientApp in this process, on its own data only) in a thread, so the notebook stays usable. After every round
the form redraws each site's training loss and held-out SSIM against the round, a table of the latest per-site
figures, and who failed or was rejected and why (the reasons the server logged). **Stop** ends the experiment
after the round in flight. At the end it shows the global model's path (the last round's, or with a round
patience the round with the sites' best mean validation SSIM), SHA-256 and catalog experiment ID, and whether its
hash is queued for anchoring on the ledger.

References:
    McMahan B et al. Communication-efficient learning of deep networks from decentralized data (FedAvg).
    AISTATS 2017.
    Aggarwal HK, Mani MP, Jacob M. MoDL: model-based deep learning architecture for inverse problems.
    IEEE TMI 2019 (the network trained).

Example:
    >>> from cloudmri_kernel.catalog.db import Catalog
    >>> from cloudmri_widgets import FederatedExperiment
    >>> form = FederatedExperiment(catalog=Catalog.open())  # doctest: +SKIP
    >>> form  # doctest: +SKIP
    >>> form.rounds.value = 5  # doctest: +SKIP
    >>> result = form.run()  # doctest: +SKIP
    >>> form.final_sha256  # doctest: +SKIP
    '9c1e…'
"""

from __future__ import annotations

import getpass
import html
import io
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as widgets
import traitlets

from cloudmri_kernel.errors import CloudMRIError, UsageError

if TYPE_CHECKING:  # torch and Flower load when a form is made, not with the widget package
    from cloudmri_kernel.federated.aggregation import RoundRecord
    from cloudmri_kernel.federated.experiment import ExperimentConfig, ExperimentResult
    from cloudmri_kernel.federated.sites import SiteConfig

__all__ = ["FederatedExperiment", "NETWORK_SIZES", "DEFAULT_SITES", "site_curves"]

#: The network sizes offered, as :class:`~cloudmri_kernel.recon.unrolled.MoDLConfig` arguments: ``small``
#: trains in seconds per round (a first look), ``normal`` is MoDL's default.
NETWORK_SIZES = {"small": {"unrolls": 1, "cg_iterations": 2, "features": 8, "depth": 3}, "normal": {}}

#: Three deliberately different sites (:class:`~cloudmri_kernel.federated.sites.SiteConfig` arguments): coil
#: count, noise, sampling and contrast all differ.
DEFAULT_SITES = (
    {"name": "siteA", "coils": 4, "noise": 0.01, "accel": 4, "pattern": "poisson", "contrast": "t1"},
    {"name": "siteB", "coils": 8, "noise": 0.03, "accel": 4, "pattern": "poisson", "contrast": "t2"},
    {"name": "siteC", "coils": 6, "noise": 0.02, "accel": 3, "pattern": "uniform", "contrast": "t1"},
)

_ERROR = "#b00020"
_COLUMNS = (("name", "8em"), ("coils", "5em"), ("noise", "6em"), ("accel.", "5em"), ("pattern", "7em"),
            ("contrast", "6em"), ("train", "5em"), ("val.", "5em"), ("test", "5em"))
#: What a column header says when the pointer rests on it (an input without a description shows no tooltip).
_COLUMN_HELP = {"noise": "standard deviation of the complex noise added to each coil's k-space",
                "accel.": "undersampling factor outside the calibration lines",
                "train": "training images: what the site trains on",
                "val.": "validation images: the fine-tuning epoch kept (and with a round patience, the round kept) "
                        "is chosen on them, never on the held-out ones",
                "test": "held-out images: every round's model is scored on them"}


@dataclass
class SiteRow:
    """The inputs of one site in the table."""

    name: widgets.Text
    coils: widgets.IntText
    noise: widgets.FloatText
    accel: widgets.IntText
    pattern: widgets.Dropdown
    contrast: widgets.Dropdown
    train_count: widgets.IntText
    val_count: widgets.IntText
    test_count: widgets.IntText
    remove_button: widgets.Button

    @classmethod
    def of(cls, site: SiteConfig) -> SiteRow:
        from cloudmri_kernel.recon.synthetic import CONTRASTS, PATTERNS

        widths = dict(_COLUMNS)

        def layout(column: str) -> widgets.Layout:
            return widgets.Layout(width=widths[column])

        return cls(widgets.Text(site.name, layout=layout("name")),
                   widgets.IntText(site.coils, layout=layout("coils")),
                   widgets.FloatText(site.noise, layout=layout("noise")),
                   widgets.IntText(site.accel, layout=layout("accel.")),
                   widgets.Dropdown(options=PATTERNS, value=site.pattern, layout=layout("pattern")),
                   widgets.Dropdown(options=CONTRASTS, value=site.contrast, layout=layout("contrast")),
                   widgets.IntText(site.train_count, layout=layout("train")),
                   widgets.IntText(site.val_count, layout=layout("val.")).add_class("fl-val"),
                   widgets.IntText(site.test_count, layout=layout("test")),
                   widgets.Button(icon="times", tooltip="Remove this site", layout=widgets.Layout(width="3em")))

    @property
    def inputs(self) -> list[widgets.Widget]:
        return [self.name, self.coils, self.noise, self.accel, self.pattern, self.contrast, self.train_count,
                self.val_count, self.test_count]

    def box(self) -> widgets.HBox:
        return widgets.HBox([*self.inputs, self.remove_button])


def site_curves(rounds: list[RoundRecord]) -> dict[str, dict[str, list]]:
    """Per site, what the plot draws: ``{site: {"round", "train-loss", "loss", "ssim", "psnr"}}``.

    A round in which a site reported nothing (it failed) is left out of its lists; a figure missing from a round
    it did report in (it trained, but its held-out evaluation failed) is NaN.
    """
    curves: dict[str, dict[str, list]] = {}
    for record in rounds:
        for site in sorted(set(record.train) | set(record.evaluate)):
            curve = curves.setdefault(site, {"round": [], "train-loss": [], "loss": [], "ssim": [], "psnr": []})
            curve["round"].append(record.round)
            curve["train-loss"].append(record.train.get(site, {}).get("train-loss", float("nan")))
            for key in ("loss", "ssim", "psnr"):
                curve[key].append(record.evaluate.get(site, {}).get(key, float("nan")))
    return curves


def _cell(value, digits: str) -> str:
    return "–" if value is None else format(value, digits)


class FederatedExperiment(widgets.VBox):
    """A form that runs a federated experiment in this process and shows its progress round by round.

    Args:
        catalog: a :class:`cloudmri_kernel.catalog.db.Catalog` to record the experiment and its models in;
            None runs without a record.
        ledger: a :class:`cloudmri_kernel.ledger.client.Ledger`; every round's global model hash is queued on it
            for anchoring.
        out_dir: folder for the global models (``round-N.pt``); default the models directory's ``NAME/``, where
            ``cloudmri recon --method dl --model SHA256`` finds them.
        created_by: the user the catalog records; default the notebook's user.
        sites: the :class:`~cloudmri_kernel.federated.sites.SiteConfig` s the table starts with (their matrix and
            calibration lines are the form's, from the first); default :data:`DEFAULT_SITES`.

    Attributes:
        site_rows: the table's :class:`SiteRow` s; ``add_site()`` and ``remove_site(row)`` change it.
        rounds_recorded: the :class:`RoundRecord` of every finished round of the last run, as the server made it;
            :func:`site_curves` of it is what the plot shows (:attr:`curves`).
        result: the :class:`ExperimentResult` of the last run that finished or was stopped, else None.
    """

    status = traitlets.Unicode("idle", help="idle, running, finished, stopped, failed or refused")
    busy = traitlets.Bool(False, help="an experiment is running")
    rounds_done = traitlets.Int(0, help="rounds finished in the current or last run")
    experiment_id = traitlets.Unicode("", help="the catalog's experiment of the last run")
    final_path = traitlets.Unicode("", help="the global model file the last run kept: its last round's, or with a "
                                   "round patience the one with the sites' best mean validation SSIM")
    final_sha256 = traitlets.Unicode("", help="its SHA-256")

    def __init__(self, catalog=None, ledger=None, out_dir: str | Path | None = None, created_by: str | None = None,
                 sites: Sequence[SiteConfig] | None = None, **kwargs):
        from cloudmri_kernel.federated.aggregation import STRATEGIES
        from cloudmri_kernel.federated.experiment import ExperimentConfig
        from cloudmri_kernel.federated.sites import SiteConfig

        sites = [SiteConfig(**site) for site in DEFAULT_SITES] if sites is None else list(sites)
        self.catalog, self.ledger = catalog, ledger
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.created_by = created_by or getpass.getuser()
        self.rounds_recorded: list[RoundRecord] = []
        self.result: ExperimentResult | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        style = {"description_width": "10em"}
        defaults = ExperimentConfig()
        self.name = widgets.Text(defaults.name, description="Experiment", style=style)
        self.rounds = widgets.IntText(defaults.rounds, description="Rounds", style=style)
        self.rounds_patience = widgets.IntText(
            defaults.rounds_patience, description="Round patience", style=style,
            tooltip="stop this many rounds after the best mean validation SSIM of the sites and keep that round's "
            "model (Rounds is then the most); needs sites with validation images; 0: every round")
        self.strategy = widgets.Dropdown(options=list(STRATEGIES), value=defaults.strategy, description="Strategy",
                                         style=style)
        self.local_epochs = widgets.IntText(defaults.local_epochs, description="Local epochs", style=style)
        self.lr = widgets.FloatText(defaults.lr, description="Learning rate", style=style)
        self.min_sites = widgets.IntText(defaults.min_sites, description="Min sites per round", style=style,
                                         tooltip="fewest usable sites for a round to update the global model")
        self.personalize_epochs = widgets.IntText(
            defaults.personalize_epochs, description="Personalize epochs", style=style,
            tooltip="after the last round each site fine-tunes the final model on its own data and keeps it; 0: off")
        self.personalize_patience = widgets.IntText(
            defaults.personalize_patience, description="Fine-tune patience", style=style,
            tooltip="a site with validation images stops fine-tuning this many epochs after its best; 0: every epoch")
        self.local_lamda = widgets.Checkbox(
            defaults.local_lamda, description="Site λ", style=style, indent=False,
            tooltip="each site keeps its own data-consistency weight and, after the last round, the model with it")
        self.network = widgets.ToggleButtons(options=list(NETWORK_SIZES), value="small", description="Network",
                                             style=style, tooltip="small: seconds per round; normal: MoDL's default")
        first = sites[0] if sites else SiteConfig("site")
        self.matrix = widgets.IntText(first.matrix, description="Image matrix", style=style)
        self.calib = widgets.IntText(first.calib, description="Calibration lines", style=style)
        self.site_rows: list[SiteRow] = []
        self.sites_table = widgets.VBox()
        self.add_site_button = widgets.Button(description="Add site", icon="plus")
        self.problems = widgets.HTML()
        self.start_button = widgets.Button(description="Start", icon="play", button_style="primary")
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="warning", disabled=True,
                                          tooltip="Stop after the round in flight")
        self.progress = widgets.IntProgress(0, min=0, max=defaults.rounds, description="idle")
        self.message = widgets.HTML()
        self.figure = widgets.Image(format="png")
        self.latest = widgets.HTML()
        self.participants = widgets.HTML()
        self.add_site_button.on_click(lambda _button: self.add_site())
        self.start_button.on_click(lambda _button: self.start())
        self.stop_button.on_click(lambda _button: self.stop())
        for field in (self.name, self.rounds, self.rounds_patience, self.strategy, self.local_epochs, self.lr,
                      self.min_sites, self.personalize_epochs, self.personalize_patience, self.local_lamda,
                      self.network, self.matrix, self.calib):
            field.observe(self._check_form, names="value")
        header = widgets.HBox([widgets.HTML(f"<b title='{html.escape(_COLUMN_HELP.get(title, title))}'>{title}</b>",
                                            layout=widgets.Layout(width=width)) for title, width in _COLUMNS])
        super().__init__([self.name, widgets.HTML("<b>Sites</b> (each trains on its own synthetic data only)"),
                          header, self.sites_table, self.add_site_button, self.matrix, self.calib,
                          widgets.HBox([widgets.VBox([self.rounds, self.rounds_patience, self.strategy,
                                                      self.local_epochs]),
                                        widgets.VBox([self.lr, self.min_sites, self.personalize_epochs,
                                                      self.personalize_patience, self.local_lamda,
                                                      self.network])]),
                          self.problems, widgets.HBox([self.start_button, self.stop_button, self.progress]),
                          self.message, self.figure, self.latest, self.participants], **kwargs)
        for site in sites:
            self.add_site(site)

    # -- the form ------------------------------------------------------------------------------------------------

    def add_site(self, site: SiteConfig | None = None) -> SiteRow:
        """Add a row to the sites table: ``site``, or the next of :data:`DEFAULT_SITES` under a new name."""
        from cloudmri_kernel.federated.sites import SiteConfig

        if site is None:
            taken = {row.name.value for row in self.site_rows}
            name = next(f"site{n}" for n in range(1, len(taken) + 2) if f"site{n}" not in taken)
            site = SiteConfig(**{**DEFAULT_SITES[len(self.site_rows) % len(DEFAULT_SITES)], "name": name})
        row = SiteRow.of(site)
        row.remove_button.on_click(lambda _button: self.remove_site(row))
        for field in row.inputs:
            field.observe(self._check_form, names="value")
        self.site_rows.append(row)
        self._show_sites()
        return row

    def remove_site(self, row: SiteRow) -> None:
        """Remove a row from the sites table."""
        self.site_rows.remove(row)
        self._show_sites()

    def _show_sites(self) -> None:
        self.sites_table.children = [row.box() for row in self.site_rows]
        self._check_form()

    def site_configs(self) -> list[SiteConfig]:
        """The sites the table describes (site ``i`` seeded with ``i``, so every site's data differ).

        Raises:
            UsageError: no sites, a repeated or empty name, or a value out of range (the message names the site).
        """
        from cloudmri_kernel.federated.sites import SiteConfig

        if not self.site_rows:
            raise UsageError("add at least one site")
        names = [row.name.value.strip() for row in self.site_rows]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise UsageError(f"site names must be unique: {', '.join(repeated)} is used more than once")
        sites = []
        for seed, (name, row) in enumerate(zip(names, self.site_rows, strict=True)):
            try:
                sites.append(SiteConfig(name, matrix=self.matrix.value, calib=self.calib.value,
                                        coils=row.coils.value, noise=row.noise.value, accel=row.accel.value,
                                        pattern=row.pattern.value, contrast=row.contrast.value,
                                        train_count=row.train_count.value, val_count=row.val_count.value,
                                        test_count=row.test_count.value,
                                        seed=seed))
            except UsageError as error:
                raise UsageError(error.args[0] if error.args[0].startswith("site") else
                                 f"site {name or seed + 1}: {error.args[0]}") from None
        return sites

    def experiment_config(self) -> ExperimentConfig:
        """The experiment the form describes.

        Raises:
            UsageError: a value out of range, or more sites required per round than the table has.
        """
        from cloudmri_kernel.federated.experiment import ExperimentConfig
        from cloudmri_kernel.recon.unrolled import MoDLConfig

        if not self.name.value.strip():
            raise UsageError("give the experiment a name")
        if not self.lr.value > 0:
            raise UsageError(f"the learning rate must be above 0, got {self.lr.value}")
        config = ExperimentConfig(name=self.name.value.strip(), strategy=self.strategy.value,
                                  rounds=self.rounds.value, rounds_patience=self.rounds_patience.value,
                                  local_epochs=self.local_epochs.value, lr=self.lr.value,
                                  min_sites=self.min_sites.value, personalize_epochs=self.personalize_epochs.value,
                                  personalize_patience=self.personalize_patience.value,
                                  local_lamda=self.local_lamda.value,
                                  architecture=MoDLConfig(**NETWORK_SIZES[self.network.value]))
        if config.min_sites > len(self.site_rows):
            raise UsageError(f"min sites per round is {config.min_sites} but there are only "
                             f"{len(self.site_rows)} sites")
        if config.rounds_patience and not any(site.val_count for site in self.site_configs()):
            raise UsageError("a round patience chooses rounds on the sites' validation images: give at least "
                             "one site some (the val. column)")
        return config

    def form_problem(self) -> str | None:
        """What is wrong with the form, or None."""
        try:
            self.site_configs()
            self.experiment_config()
        except UsageError as error:
            return str(error)
        return None

    def _check_form(self, _change=None) -> None:
        problem = self.form_problem()
        self.problems.value = (f"<div style='color:{_ERROR}'>Fix the form: {html.escape(problem)}</div>"
                               if problem else "")

    def _say(self, text: str, error: bool = False) -> None:
        colour = _ERROR if error else "inherit"
        self.message.value = f"<div style='color:{colour}'>{text}</div>" if text else ""

    # -- running -------------------------------------------------------------------------------------------------

    @property
    def curves(self) -> dict[str, dict[str, list]]:
        """:func:`site_curves` of the rounds recorded so far: what the plot shows."""
        return site_curves(self.rounds_recorded)

    def start(self) -> None:
        """Run :meth:`run` in a thread, so the notebook stays usable; :meth:`wait` waits for it."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self.run, name="cloudmri-federated", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the run :meth:`start` began."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        """Stop the running experiment after the round in flight (its global model is kept)."""
        if not self.busy:
            return
        self._stop.set()
        self.stop_button.disabled = True
        self._say("Stopping after the round in flight…")

    def run(self) -> ExperimentResult | None:
        """Check the form, run the experiment round by round, and show the result; returns it.

        Blocks until the experiment ends (use :meth:`start` from a notebook). Returns None, with a message in the
        form, when nothing was started (a bad value) or when it failed; after Stop, the result says ``stopped``.
        """
        if self.busy:
            return None
        self.busy, self.start_button.disabled = True, True
        try:
            return self._run()
        finally:
            self.busy, self.start_button.disabled, self.stop_button.disabled = False, False, True

    def _run(self) -> ExperimentResult | None:
        from cloudmri_kernel.federated.experiment import run_experiment
        from cloudmri_kernel.recon.model_files import models_dir

        problem = self.form_problem()
        if problem is not None:
            self.status = "refused"
            self._say(f"Nothing was started. Fix the form: {html.escape(problem)}", error=True)
            return None
        config, sites = self.experiment_config(), self.site_configs()
        out_dir = self.out_dir if self.out_dir is not None else models_dir() / config.name
        self._stop.clear()
        self.rounds_recorded, self.result = [], None
        self.experiment_id = self.final_path = self.final_sha256 = ""
        self.rounds_done = 0
        self.progress.max, self.progress.value, self.progress.bar_style = config.rounds, 0, ""
        self.progress.description = "round 0"
        self.figure.value, self.latest.value, self.participants.value = b"", "", ""
        self.status = "running"
        self.stop_button.disabled = False
        self._say(f"Running {config.rounds} rounds of {config.strategy} across {len(sites)} sites…")
        site_names = [site.name for site in sites]

        def on_round(record: RoundRecord) -> None:
            self.rounds_recorded.append(record)
            self._show_round(site_names)
            self.rounds_done = record.round

        try:
            result = run_experiment(config, sites, out_dir, catalog=self.catalog, created_by=self.created_by,
                                    ledger=self.ledger, on_round=on_round, stop=self._stop)
        except Exception as error:  # noqa: BLE001 (whatever broke the run is shown in the form, not only logged)
            logging.getLogger(__name__).exception("federated experiment %s failed", config.name)
            self.status = "failed"
            self.progress.bar_style, self.progress.description = "danger", "failed"
            text = str(error) if isinstance(error, CloudMRIError) else f"{type(error).__name__}: {error}"
            self._say(f"The experiment failed ({self.rounds_done} of {config.rounds} rounds done): "
                      f"{html.escape(text)}", error=True)
            return None
        self.result = result
        self.experiment_id = result.experiment_id or ""
        self.final_path, self.final_sha256 = str(result.kept.path), result.kept.sha256
        if result.stopped:
            self.status = "stopped"
            self.progress.bar_style, self.progress.description = "warning", "stopped"
            self._say(f"Stopped after round {result.final.round} of {config.rounds}.{self._kept_html(result)}"
                      f"<br>{self._model_html()}")
            return result
        self.status = "finished"
        self.progress.bar_style, self.progress.description = "success", "finished"
        early = (f" ({config.rounds_patience} without a better validation score)"
                 if len(result.rounds) < config.rounds else "")
        self._say(f"Finished {len(result.rounds)} of {config.rounds} rounds{early} in {result.seconds:.0f} s."
                  f"{self._kept_html(result)}<br>{self._model_html()}"
                  f"{self._personalization_html(result.personalization, config.local_lamda)}")
        return result

    @staticmethod
    def _kept_html(result: ExperimentResult) -> str:
        """Which round's model the run kept, with a round patience."""
        from cloudmri_kernel.federated.experiment import validation_score

        if result.kept_round is None:
            return ""
        score = validation_score(result.rounds[result.kept_round - 1])
        return f" Kept round {result.kept_round}: the best mean validation SSIM of the sites ({score:.3f})."

    @staticmethod
    def _personalization_html(step, site_lamda: bool) -> str:
        """Each site's held-out SSIM before and after fine-tuning the final model on its own data (or, with the
        sites' own λ and no fine-tuning, of the model each site keeps)."""
        if step is None:
            return ""
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{model.before['ssim']:.3f}</td>"
                       f"<td>{model.after['ssim']:.3f}</td>"
                       + (f"<td>{model.kept_epoch}/{model.epochs_run}</td>" if step.epochs else "")
                       + f"<td><code>{html.escape(model.path)}</code></td></tr>" for name, model in step.sites.items())
        columns = 4 if step.epochs else 3
        rows += "".join(f"<tr><td>{html.escape(name)}</td><td colspan='{columns}'>failed: {html.escape(reason)}</td>"
                        "</tr>" for name, reason in step.failed.items())
        start = ", from its own λ" if site_lamda else ""
        budget = (f"up to {step.epochs} epochs at each site, stopping {step.patience} after its best"
                  if step.patience else f"{step.epochs} epochs at each site")
        what = (f"Personalized ({budget}{start}, kept there)" if step.epochs
                else "Each site's model (the global denoiser with the site's own λ, kept there)")
        return (f"<br>{what}:<table class='fl-personalized'>"
                "<tr><th>site</th><th>SSIM before</th><th>after</th>"
                + ("<th>epoch kept/run</th>" if step.epochs else "") + "<th>model at the site</th></tr>"
                f"{rows}</table>")

    def _model_html(self) -> str:
        lines = [f"Global model: <code>{html.escape(self.final_path)}</code>",
                 f"SHA-256: <code>{self.final_sha256}</code>",
                 f"Catalog experiment: <code>{self.experiment_id}</code>" if self.experiment_id
                 else "Not recorded in the catalog (no catalog given)."]
        if self.ledger is not None:
            queued = self.ledger.queue.find(self.final_sha256)
            lines.append("The model hash is queued for anchoring on the ledger." if queued else
                         "The model hash is <b>not</b> in the ledger's queue.")
        return "<br>".join(lines)

    # -- showing rounds ------------------------------------------------------------------------------------------

    def _show_round(self, site_names: list[str]) -> None:
        record = self.rounds_recorded[-1]
        self.progress.value, self.progress.description = record.round, f"round {record.round}"
        self.figure.value = self._plot()
        self.latest.value = self._latest_html(record, site_names)
        self.participants.value = self._participants_html(record)

    def _plot(self) -> bytes:
        """Training loss and held-out SSIM per site against the round, as PNG (drawn off-screen: thread-safe)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(9, 3.2), layout="constrained")
        FigureCanvasAgg(figure)
        loss_axes, ssim_axes = figure.subplots(1, 2)
        for site, curve in self.curves.items():
            loss_axes.plot(curve["round"], curve["train-loss"], marker="o", label=site)
            ssim_axes.plot(curve["round"], curve["ssim"], marker="o", label=site)
        loss_axes.set(xlabel="round", ylabel="training loss", title="Training loss (each site, its own data)")
        ssim_axes.set(xlabel="round", ylabel="SSIM", title="Held-out SSIM (each site)")
        for axes in (loss_axes, ssim_axes):
            axes.xaxis.get_major_locator().set_params(integer=True)
            axes.grid(alpha=0.3)
        ssim_axes.legend(loc="best", fontsize="small")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        return buffer.getvalue()

    @staticmethod
    def _latest_html(record: RoundRecord, site_names: list[str]) -> str:
        failed = set(record.failed)
        rows = []
        for site in sorted(site_names):
            train, held_out = record.train.get(site, {}), record.evaluate.get(site, {})
            state = ("failed" if site in failed else "rejected" if site in record.rejected
                     else "trained" if site in record.trained else "–")
            rows.append(f"<tr><td>{html.escape(site)}</td><td>{state}</td>"
                        f"<td>{_cell(train.get('train-loss'), '.4f')}</td>"
                        f"<td>{_cell(held_out.get('loss'), '.4f')}</td><td>{_cell(held_out.get('ssim'), '.4f')}</td>"
                        f"<td>{_cell(held_out.get('psnr'), '.2f')}</td></tr>")
        return (f"<b>Round {record.round}</b><table><tr><th>site</th><th>this round</th><th>training loss</th>"
                "<th>held-out loss</th><th>held-out SSIM</th><th>PSNR (dB)</th></tr>" + "".join(rows) + "</table>")

    @staticmethod
    def _participants_html(record: RoundRecord) -> str:
        lines = []
        if not record.complete:
            lines.append("Too few usable sites: this round kept the previous global model.")
        lines += [f"{html.escape(site)} failed: {html.escape(reason)}" for site, reason in record.failed.items()]
        lines += [f"{html.escape(site)} was rejected: {html.escape(reason)}" for site, reason in
                  record.rejected.items()]
        return "".join(f"<div style='color:{_ERROR}'>{line}</div>" for line in lines)
