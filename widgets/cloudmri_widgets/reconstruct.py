"""A notebook form to reconstruct a dataset on the Cloud-MRI service and compare the result with zero filling.

The method's parameters are a form generated from the recipe's JSON schema
(:func:`cloudmri_kernel.recon.recipe.recipe_schema`, the pydantic models of :mod:`cloudmri_kernel.recon.recipe`):
a ``Literal`` becomes a drop-down, a bool a checkbox, an int or float a text box checked against the schema's
bounds, a fixed-length tuple a row of boxes. The recipe is checked by the same parser the service uses before
anything is sent. The job runs on the service's Dask cluster (:meth:`cloudmri_kernel.client.Client.submit`);
a thread follows it (progress bar, Cancel button) while the notebook stays usable. The result is shown in the
:class:`~cloudmri_widgets.Viewer` next to the zero-filled inverse FFT of the same data (an existing ``ifft``
series of the dataset, or a new ``ifft`` job), with quality figures (:mod:`cloudmri_kernel.quality`).

Example:
    >>> from cloudmri_widgets import Reconstruct
    >>> form = Reconstruct()  # doctest: +SKIP
    >>> form  # doctest: +SKIP
    >>> form.method.value = "cs-wavelet"  # doctest: +SKIP
    >>> form.fields["lamda"].value = 0.01  # doctest: +SKIP
    >>> form.run()  # doctest: +SKIP
    {'id': '…', 'status': 'done', 'series_id': '…', …}
"""

from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING

import ipywidgets as widgets
import numpy as np
import traitlets

from cloudmri_kernel.client import ServiceError
from cloudmri_kernel.errors import CloudMRIError
from cloudmri_widgets.upload import token_problem
from cloudmri_widgets.viewer import Viewer

if TYPE_CHECKING:
    from cloudmri_kernel.client import Client

__all__ = ["Reconstruct", "AUTO", "recipe_fields", "quality_rows"]

#: The method choice that lets the service pick the recipe from the raw header (``recipe=None``).
AUTO = "auto"
_FINISHED = ("done", "failed", "cancelled")
_BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))


def _methods() -> dict[str, dict]:
    """Each method's JSON schema, in the order the recipe union lists them."""
    from cloudmri_kernel.recon.recipe import recipe_schema

    schema = recipe_schema()
    models = [schema["$defs"][ref["$ref"].rsplit("/", 1)[1]] for ref in schema["oneOf"]]
    return {model["properties"]["method"]["const"]: model for model in models}


def _number_box(kind: str, value, description: str, tooltip: str) -> widgets.Widget:
    box = widgets.IntText if kind == "integer" else widgets.FloatText
    return box(value=value, description=description, description_allow_html=False, tooltip=tooltip,
               style={"description_width": "10em"})


def _field_widget(name: str, prop: dict) -> widgets.Widget:
    """The input for one recipe field, from its JSON schema."""
    help_text = prop.get("description", "")
    bounds = ", ".join(f"{sign} {prop[key]:g}" for key, sign in _BOUNDS if key in prop)
    tooltip = f"{help_text} ({bounds})".strip() if bounds else help_text
    default = prop.get("default")
    if "enum" in prop:
        return widgets.Dropdown(options=prop["enum"], value=default, description=name, tooltip=tooltip,
                                style={"description_width": "10em"})
    kind = prop.get("type")
    if kind == "boolean":
        return widgets.Checkbox(value=bool(default), description=name, tooltip=tooltip, indent=False)
    if kind in ("integer", "number"):
        label = f"{name} ({bounds})" if bounds else name
        return _number_box(kind, default, label, tooltip)
    if kind == "array" and "prefixItems" in prop:
        items = [_number_box(item["type"], value, "", tooltip) for item, value in zip(prop["prefixItems"], default,
                                                                                      strict=True)]
        for item in items:
            item.layout.width = "6em"
        return widgets.HBox([widgets.Label(name, layout=widgets.Layout(width="10em")), *items])
    raise TypeError(f"recipe field {name} has a schema the form cannot show ({prop}): extend "
                    "cloudmri_widgets.reconstruct._field_widget")


def recipe_fields(method: str) -> dict[str, widgets.Widget]:
    """An input widget per parameter of ``method`` (all but ``method``), from the recipe's JSON schema.

    Args:
        method: a recipe method, e.g. ``"cs-wavelet"``.

    Returns:
        ``{field name: widget}`` in the schema's order; read the values with :func:`field_value`.
    """
    properties = _methods()[method]["properties"]
    return {name: _field_widget(name, prop) for name, prop in properties.items() if name != "method"}


def field_value(widget: widgets.Widget):
    """The value a field widget holds (a list for a row of boxes)."""
    if isinstance(widget, widgets.HBox):
        return [child.value for child in widget.children[1:]]
    return widget.value


def quality_rows(zero_filled: np.ndarray, result: np.ndarray, method: str) -> list[dict]:
    """Quality figures of a reconstruction next to the zero-filled image of the same data.

    SSIM, PSNR and NMSE (fastMRI's definitions) are taken *against the zero-filled image*: real scans have no
    ground truth, so they tell how far a method moved from plain zero filling, not how right it is. The
    no-reference sharpness measures, Tenengrad (higher is sharper; Krotkov 1987) and gradient entropy (lower is
    sharper; McGee et al. 2000), are given for both images. The background SNR is left out: its noise model
    does not hold after parallel imaging or compressed sensing.

    Returns:
        ``[{"image", "ssim", "psnr", "nmse", "tenengrad", "gradient_entropy"}, …]``, zero-filled first; the
        full-reference figures are None for the zero-filled image itself and when the shapes differ.
    """
    from cloudmri_kernel.quality import compare, gradient_entropy, tenengrad

    rows = [{"image": "zero-filled", "ssim": None, "psnr": None, "nmse": None,
             "tenengrad": tenengrad(zero_filled), "gradient_entropy": gradient_entropy(zero_filled)}]
    if method == "ifft":
        return rows
    versus = {"ssim": None, "psnr": None, "nmse": None}
    if zero_filled.shape == result.shape:
        (row,) = compare(zero_filled, {method: result})
        versus = {"ssim": row.ssim, "psnr": row.psnr, "nmse": row.nmse}
    rows.append({"image": method, **versus, "tenengrad": tenengrad(result),
                 "gradient_entropy": gradient_entropy(result)})
    return rows


def _rows_html(rows: list[dict]) -> str:
    def cell(value, digits: str) -> str:
        return "–" if value is None else format(value, digits)

    body = "".join(f"<tr><td>{html.escape(r['image'])}</td><td>{cell(r['ssim'], '.4f')}</td>"
                   f"<td>{cell(r['psnr'], '.2f')}</td><td>{cell(r['nmse'], '.4g')}</td>"
                   f"<td>{cell(r['tenengrad'], '.4g')}</td><td>{cell(r['gradient_entropy'], '.4f')}</td></tr>"
                   for r in rows)
    return ("<table><tr><th>image</th><th>SSIM</th><th>PSNR (dB)</th><th>NMSE</th><th>Tenengrad ↑</th>"
            f"<th>gradient entropy ↓</th></tr>{body}</table><small>SSIM, PSNR and NMSE against the zero-filled "
            "image (not a ground truth); Tenengrad and gradient entropy need no reference.</small>")


class Reconstruct(widgets.VBox):
    """A form that reconstructs a dataset through the API and shows the result next to the zero-filled image.

    Args:
        client: a :class:`cloudmri_kernel.client.Client`; None for the notebook's default client.
        dataset_id: the dataset to select first; default the newest one the caller can see.
        method: the method to select first; default :data:`AUTO` (the service picks it from the header).
        poll_interval: seconds between looks at a running job.

    Attributes:
        dataset: the dataset picker (from :meth:`Client.datasets`); ``refresh_datasets()`` reloads it.
        method: the method picker; ``fields`` holds the parameter inputs of the chosen method.
        viewer: the :class:`Viewer` of the last result (zero-filled first), or None.
        metrics: :func:`quality_rows` of the last result.
    """

    status = traitlets.Unicode("idle", help="idle, queued, running, done, failed, cancelled or refused")
    job_id = traitlets.Unicode("", help="the job of the last run")
    series_id = traitlets.Unicode("", help="the series the last run produced")
    zero_filled_id = traitlets.Unicode("", help="the zero-filled series shown next to it")
    metrics = traitlets.List(traitlets.Dict(), help="quality figures of the last result")
    busy = traitlets.Bool(False, help="a run is in progress")

    def __init__(self, client: Client | None = None, dataset_id: str | None = None, method: str = AUTO,
                 poll_interval: float = 0.5, **kwargs):
        if client is None:
            from cloudmri_kernel.notebook import default_client
            client = default_client()
        self.client = client
        self.poll_interval = poll_interval
        self.fields: dict[str, widgets.Widget] = {}
        self.viewer: Viewer | None = None
        self._thread: threading.Thread | None = None
        self.dataset = widgets.Dropdown(description="Dataset", layout=widgets.Layout(width="40em"))
        self.refresh_button = widgets.Button(icon="refresh", tooltip="Reload the datasets",
                                             layout=widgets.Layout(width="3em"))
        self.method = widgets.Dropdown(description="Method", value=method, options=[("auto (from the header)", AUTO),
                                                                                  *((m, m) for m in _methods())])
        self.parameters = widgets.VBox()
        self.problems = widgets.HTML()
        self.submit_button = widgets.Button(description="Reconstruct", icon="play", button_style="primary")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", button_style="warning",
                                            disabled=True)
        self.progress = widgets.IntProgress(0, min=0, max=100, description="idle")
        self.message = widgets.HTML()
        self.result = widgets.VBox()
        self.refresh_button.on_click(lambda _button: self.refresh_datasets())
        self.submit_button.on_click(lambda _button: self.start())
        self.cancel_button.on_click(lambda _button: self.cancel())
        self.method.observe(self._build_form, names="value")
        super().__init__([widgets.HBox([self.dataset, self.refresh_button]), self.method, self.parameters,
                          self.problems, widgets.HBox([self.submit_button, self.cancel_button, self.progress]),
                          self.message, self.result], **kwargs)
        self.refresh_datasets(dataset_id)
        self._build_form()

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "inherit"
        self.message.value = f"<div style='color:{colour}'>{text}</div>" if text else ""

    def _service_problem(self, error: CloudMRIError) -> str:
        if isinstance(error, ServiceError):
            return token_problem(error) or html.escape(str(error))
        return html.escape(str(error))

    def refresh_datasets(self, select: str | None = None) -> None:
        """Reload the datasets the caller can see, keeping (or making) the selection."""
        try:
            datasets = self.client.datasets(limit=1000)
        except CloudMRIError as error:
            self._say(self._service_problem(error), error=True)
            return
        keep = select or self.dataset.value
        self.dataset.options = [(f"{d['filename']} · {d['site']} · {d['id'][:8]}", d["id"]) for d in datasets]
        ids = [d["id"] for d in datasets]
        if keep in ids:
            self.dataset.value = keep
        if not ids:
            self._say("You can see no datasets yet: upload one first (cloudmri_widgets.Upload).")

    def _build_form(self, _change=None) -> None:
        self.fields = {} if self.method.value == AUTO else recipe_fields(self.method.value)
        for field in self.fields.values():
            for box in field.children[1:] if isinstance(field, widgets.HBox) else [field]:
                box.observe(self._check_form, names="value")
        self.parameters.children = list(self.fields.values())
        self._check_form()

    def _check_form(self, _change=None) -> None:
        problem = self.recipe_problem()
        self.problems.value = (f"<div style='color:#b00020'>Fix the parameters: {html.escape(problem)}</div>"
                               if problem else "")

    def recipe(self) -> dict | None:
        """The recipe the form describes (None for :data:`AUTO`), checked as the service checks it.

        Raises:
            UsageError: a parameter is out of its range or of the wrong kind; the message names it.
        """
        from cloudmri_kernel.recon.recipe import parse_recipe

        if self.method.value == AUTO:
            return None
        content = {"method": self.method.value, **{name: field_value(w) for name, w in self.fields.items()}}
        return parse_recipe(content).model_dump(mode="json")

    def recipe_problem(self) -> str | None:
        """What is wrong with the form's parameters, or None."""
        try:
            self.recipe()
        except CloudMRIError as error:
            return str(error)
        return None

    def start(self) -> None:
        """Run :meth:`run` in a thread, so the notebook stays usable; :meth:`wait` waits for it."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self.run, name="cloudmri-reconstruct", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the run :meth:`start` began."""
        if self._thread is not None:
            self._thread.join(timeout)

    def cancel(self) -> None:
        """Ask the service to cancel the running job; the run ends once the service says it is cancelled."""
        if not self.job_id or self.status in _FINISHED:
            return
        try:
            self.client.cancel(self.job_id)
        except CloudMRIError as error:
            self._say(self._service_problem(error), error=True)
            return
        self.cancel_button.disabled = True
        self._say("Cancelling: the service stops the job after the slice in flight…")

    def run(self) -> dict | None:
        """Check the form, submit the job, follow it to the end and show the result; returns the final job.

        Blocks until the job ends (use :meth:`start` from a notebook). Returns None, with a message in the
        form, when nothing could be submitted (bad parameters, no dataset, a refused token).
        """
        self.busy, self.submit_button.disabled = True, True
        try:
            return self._run()
        finally:
            self.busy, self.submit_button.disabled, self.cancel_button.disabled = False, False, True

    def _run(self) -> dict | None:
        problem = self.recipe_problem()
        if problem is not None:
            self.status = "refused"
            self._say(f"Nothing was submitted. Fix the parameters: {html.escape(problem)}", error=True)
            return None
        if self.dataset.value is None:
            self.status = "refused"
            self._say("Pick a dataset first (press ↻ to reload the list).", error=True)
            return None
        self.job_id = self.series_id = self.zero_filled_id = ""
        self.metrics, self.viewer, self.result.children = [], None, []
        self.progress.value, self.progress.bar_style = 0, ""
        self._say("")
        dataset_id = self.dataset.value
        try:
            job = self.client.submit(dataset_id, self.recipe())
            self.job_id = job["id"]
            self.cancel_button.disabled = False
            job = self._follow(job)
            self.cancel_button.disabled = True
            if job["status"] != "done":
                return job
            self.series_id = job["series_id"]
            method = self.client.series(job["series_id"])["method"]
            result = self.client.images(job["series_id"])
            zero_filled = result if method == "ifft" else self._zero_filled(dataset_id)
        except CloudMRIError as error:
            self.status = "failed" if self.job_id else "refused"
            self.progress.bar_style = "danger"
            self._say(self._service_problem(error), error=True)
            return None
        self._show(zero_filled, result, method)
        return job

    def _follow(self, submitted: dict) -> dict:
        """Show the job's state until it ends; returns its final state."""
        for job in self.client.watch(submitted["id"], interval=self.poll_interval):
            self.status = job["status"]
            self.progress.value = round(100 * job["progress"])
            self.progress.description = job["status"]
        if job["status"] == "failed":
            self.progress.bar_style = "danger"
            self._say(f"The reconstruction failed: {html.escape(job['error'] or 'no reason given')}", error=True)
        elif job["status"] == "cancelled":
            self.progress.bar_style = "warning"
            self._say(f"Job {job['id']} was cancelled; nothing was stored.")
        else:
            self.progress.bar_style = "success"
        return job

    def _zero_filled(self, dataset_id: str) -> np.ndarray:
        """The dataset's zero-filled image: its newest ``ifft`` series, or one made now by an ``ifft`` job."""
        existing = [s for s in self.client.series_of(dataset_id) if s["method"] == "ifft"]
        if existing:
            self.zero_filled_id = max(existing, key=lambda s: s["created_at"])["id"]
        else:
            self._say("Reconstructing the zero-filled image to compare with…")
            job = self.client.wait(self.client.submit(dataset_id, {"method": "ifft"})["id"])
            self.zero_filled_id = job["series_id"]
        return self.client.images(self.zero_filled_id)

    def _show(self, zero_filled: np.ndarray, result: np.ndarray, method: str) -> None:
        self.metrics = quality_rows(zero_filled, result, method)
        if method == "ifft":
            self.viewer = Viewer(result, titles=["zero-filled (ifft)"])
        elif zero_filled.shape == result.shape:
            self.viewer = Viewer([zero_filled, result], titles=["zero-filled (ifft)", method])
        else:
            self.viewer = Viewer(result, titles=[method])
            self._say(f"The zero-filled image has shape {zero_filled.shape}, the {method} result "
                      f"{result.shape}: only the result is shown.")
        self.result.children = [self.viewer, widgets.HTML(_rows_html(self.metrics))]
        self.status = "done"
