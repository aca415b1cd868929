"""The ``cloudmri`` command line: ingest, inspect, validate, de-identify and simulate MRI raw data.

Expected errors (bad input) print one line naming the file and the problem and exit with 1 (invalid data)
or 2 (usage); only bugs show a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloudmri_kernel import __version__
from cloudmri_kernel.errors import CloudMRIError

app = typer.Typer(help="Cloud-MRI Workbench: MRI raw data from scanner to image.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True)


def reports_errors(command):
    """Turn expected errors into one line on stderr and the error's exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CloudMRIError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)


def _version(value: bool) -> None:
    if value:
        out.print(f"cloudmri {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """Cloud-MRI Workbench command line."""


class SourceFormat(StrEnum):
    auto = "auto"
    mrd = "mrd"
    fastmri = "fastmri"
    twix = "twix"
    numpy = "numpy"


@app.command()
@reports_errors
def ingest(
    src: Annotated[Path, typer.Argument(help="Raw file: Siemens TWIX .dat, fastMRI .h5, NumPy .npy/.npz, or MRD.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="MRD file to write.")],
    anonymize: Annotated[bool, typer.Option("--anonymize", help="De-identify the header with site pseudonyms.")]
    = False,
    site: Annotated[str | None, typer.Option(help="Site whose key pseudonymizes (default: CLOUDMRI_SITE).")] = None,
    policy: Annotated[Path | None, typer.Option(help="YAML de-identification policy.")] = None,
    sidecar: Annotated[Path | None, typer.Option(help="Geometry sidecar for NumPy k-space.")] = None,
    source_format: Annotated[SourceFormat, typer.Option("--format", help="Input format.")] = SourceFormat.auto,
) -> None:
    """Convert raw data to valid MRD (ISMRMRD v1 HDF5); nothing is written unless the result is valid."""
    from cloudmri_kernel.mrd.anonymize import AnonymizationPolicy
    from cloudmri_kernel.mrd.ingest import ingest as run_ingest

    chosen = AnonymizationPolicy.from_file(policy) if policy else None
    with _progress() as bar:
        task = bar.add_task(f"ingesting {src.name}", total=None)
        result = run_ingest(src, output, anonymize=anonymize or policy is not None, site=site, policy=chosen,
                            sidecar=sidecar,
                            source_format=None if source_format is SourceFormat.auto else source_format.value,
                            progress=lambda n: bar.update(task, completed=n))
    out.print(f"wrote {result.output} ({result.source_format} -> MRD, {result.acquisitions} acquisitions)",
              highlight=False)
    if result.anonymization is not None:
        changed = ", ".join(f"{k}: {v}" for k, v in result.anonymization.actions.items()) or "no identifiers found"
        out.print(f"de-identified: {changed}", highlight=False)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _format_xyz(values) -> str:
    return " x ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


@app.command()
@reports_errors
def info(
    file: Annotated[Path, typer.Argument(help="MRD file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Summarize an MRD file: scanner, matrix, FOV, coils, trajectory, acceleration, acquisitions, flags."""
    from cloudmri_kernel.mrd.info import summarize
    from cloudmri_kernel.mrd.reader import MRDFile

    with MRDFile(file) as mrd:
        summary = summarize(mrd)
    if as_json:
        sys.stdout.write(json.dumps(summary.to_dict(), indent=2) + "\n")
        return
    table = Table(title=str(file), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("vendor / model", f"{summary.vendor or '-'} / {summary.model or '-'}"),
        ("field strength", f"{summary.field_strength_t:g} T" if summary.field_strength_t else "-"),
        ("protocol", summary.protocol or "-"),
        ("encoded matrix", _format_xyz(summary.encoded_matrix)),
        ("recon matrix", _format_xyz(summary.recon_matrix)),
        ("encoded FOV (mm)", _format_xyz(summary.encoded_fov_mm)),
        ("recon FOV (mm)", _format_xyz(summary.recon_fov_mm)),
        ("coils", str(summary.coils)),
        ("trajectory", summary.trajectory),
        ("acceleration", f"{summary.acceleration[0]} x {summary.acceleration[1]}"
         + (f" ({summary.calibration_mode} calibration)" if summary.calibration_mode else "")),
        ("slices / contrasts / repetitions", f"{summary.slices} / {summary.contrasts} / {summary.repetitions}"),
        ("TR / TE (ms)", f"{', '.join(f'{v:g}' for v in summary.tr_ms) or '-'} / "
                         f"{', '.join(f'{v:g}' for v in summary.te_ms) or '-'}"),
        ("acquisitions", f"{summary.acquisitions} ({summary.noise_acquisitions} noise)"),
        ("flags", ", ".join(f"{k}: {v}" for k, v in summary.flags.items()) or "-"),
        ("arrays", ", ".join(summary.arrays) or "-"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


@app.command()
@reports_errors
def validate(
    file: Annotated[Path, typer.Argument(help="MRD file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print findings as JSON.")] = False,
) -> None:
    """Check the header against the ISMRMRD schema and every acquisition against the header.

    Exit 0 when valid (warnings allowed), 1 when invalid, 2 when the file does not exist.
    """
    from cloudmri_kernel.errors import UsageError
    from cloudmri_kernel.mrd.validate import validate_file

    if not file.exists():
        raise UsageError("no such file: check the path", file)
    with _progress() as bar:
        bar.add_task(f"validating {file.name}", total=None)
        findings = validate_file(file)
    invalid = any(f.severity == "error" for f in findings)
    if as_json:
        sys.stdout.write(json.dumps({"file": str(file), "valid": not invalid,
                                     "findings": [f.to_dict() for f in findings]}, indent=2) + "\n")
    else:
        for finding in findings:
            colour = "red" if finding.severity == "error" else "yellow"
            out.print(f"[{colour}]{finding.severity}[/] {finding.where}: {finding.message}", highlight=False)
        out.print(f"{file}: {'INVALID' if invalid else 'valid'}", highlight=False)
    raise typer.Exit(1 if invalid else 0)


@app.command()
@reports_errors
def anonymize(
    src: Annotated[Path, typer.Argument(help="MRD file to de-identify (left unchanged).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="De-identified MRD file to write.")],
    policy: Annotated[Path | None, typer.Option(help="YAML policy; default: the built-in policy.")] = None,
    site: Annotated[str | None, typer.Option(help="Site whose key pseudonymizes (default: CLOUDMRI_SITE).")] = None,
) -> None:
    """Remove or pseudonymize patient identifiers in the header; raw samples are copied bit for bit."""
    from cloudmri_kernel.mrd.anonymize import AnonymizationPolicy, anonymize_file

    chosen = AnonymizationPolicy.from_file(policy) if policy else None
    report = anonymize_file(src, output, site=site, policy=chosen)
    out.print(f"wrote {output}", highlight=False)
    for name, action in report.actions.items():
        out.print(f"  {name}: {action}", highlight=False)
    if not report.actions:
        out.print("  no identifiers found in the header", highlight=False)


class Pattern(StrEnum):
    uniform = "uniform"
    poisson = "poisson"
    random = "random"


class Trajectory(StrEnum):
    cartesian = "cartesian"
    radial = "radial"
    spiral = "spiral"


@app.command()
@reports_errors
def phantom(
    output: Annotated[Path, typer.Option("-o", "--output", help="MRD file to write.")],
    matrix: Annotated[int, typer.Option(help="Image matrix (square).")] = 256,
    coils: Annotated[int, typer.Option(help="Receive coils.")] = 8,
    accel: Annotated[int, typer.Option(help="Undersampling factor.")] = 1,
    calib: Annotated[int, typer.Option(help="Fully sampled centre (ACS) lines.")] = 24,
    pattern: Annotated[Pattern, typer.Option(help="Undersampling pattern.")] = Pattern.uniform,
    trajectory: Annotated[Trajectory, typer.Option(help="k-space trajectory.")] = Trajectory.cartesian,
    noise: Annotated[float, typer.Option(help="Noise level (see PhantomSpec).")] = 0.01,
    slices: Annotated[int, typer.Option(help="Number of slices.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Simulate a multi-coil scan of a Shepp-Logan phantom, with the ground truth in the same file."""
    from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom

    spec = PhantomSpec(matrix=matrix, coils=coils, accel=accel, calib=calib, pattern=pattern.value,
                       trajectory=trajectory.value, noise=noise, slices=slices, seed=seed)
    with _progress() as bar:
        bar.add_task("simulating", total=None)
        path = write_phantom(output, spec)
    out.print(f"wrote {path} ({trajectory.value}, {matrix}x{matrix}, {coils} coils, R={accel}, {slices} slice(s))",
              highlight=False)


@app.command()
@reports_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the demo's files.")] = Path("out/demo"),
    matrix: Annotated[int, typer.Option(help="Phantom matrix.")] = 256,
) -> None:
    """Simulate a phantom scan, ingest it de-identified, reconstruct it and print where the result is."""
    from cloudmri_kernel.demo import run_demo

    with _progress() as bar:
        task = bar.add_task("demo", total=3)
        result = run_demo(out_dir, matrix=matrix,
                          step=lambda message: bar.update(task, description=message, advance=1))
    out.print(f"raw scan (simulated):    {result.raw}", highlight=False)
    out.print(f"ingested, de-identified: {result.ingested}", highlight=False)
    out.print(f"reconstruction (MRD):    {result.images}", highlight=False)
    out.print(f"reconstruction (PNG):    {result.png}", highlight=False)
    out.print(f"NRMSE against the ground truth: {result.nrmse:.4f}", highlight=False)


class Method(StrEnum):
    ifft = "ifft"
    grappa = "grappa"
    sense = "sense"
    cs_wavelet = "cs-wavelet"
    cs_tv = "cs-tv"
    nufft = "nufft"
    dl = "dl"


class Device(StrEnum):
    cpu = "cpu"
    cuda = "cuda"


class ExportFormat(StrEnum):
    dicom = "dicom"
    nifti = "nifti"
    png = "png"


@app.command()
@reports_errors
def recon(
    src: Annotated[list[Path], typer.Argument(help="MRD raw file(s); several files run as one batch.")],
    output: Annotated[Path, typer.Option("-o", "--output",
                                         help="MRD image file to write; a directory when several inputs.")],
    method: Annotated[Method | None, typer.Option(help="Method; default: chosen from each header.")] = None,
    recipe: Annotated[Path | None, typer.Option(help="YAML/JSON recipe (method and parameters).")] = None,
    lamda: Annotated[float | None, typer.Option("--lambda", help="Regularization weight of the method.")] = None,
    model: Annotated[str | None, typer.Option(help="Trained model for --method dl: a name or a .pt file "
                                                   "(`cloudmri dl models` lists them).")] = None,
    device: Annotated[Device | None, typer.Option(help="Where the torch parts run.")] = None,
    workers: Annotated[int | None, typer.Option(help="Dask workers (default: in this process).", min=1)] = None,
    export_to: Annotated[tuple[ExportFormat, Path] | None, typer.Option(
        "--export", help="Also export the images: --export dicom|nifti|png DIR.")] = None,
) -> None:
    """Reconstruct MRD raw files into MRD images (recipe stored with them); optionally export them."""
    from cloudmri_kernel.mrd.reader import MRDFile
    from cloudmri_kernel.recon.engine import reconstruct_files
    from cloudmri_kernel.recon.output import export, write_recon
    from cloudmri_kernel.recon.recipe import default_recipe, load_recipe, parse_recipe

    overrides = {k: v for k, v in (("method", method and method.value), ("lamda", lamda), ("model", model),
                                   ("device", device and device.value)) if v is not None}
    if recipe is not None:
        chosen = load_recipe(recipe, overrides)
    elif overrides:
        with MRDFile(src[0]) as mrd:
            base = default_recipe(mrd.header).model_dump()
        if "method" in overrides and overrides["method"] != base["method"]:
            base = {}
        chosen = parse_recipe({**base, **overrides})
    else:
        chosen = None
    if len(src) > 1:
        output.mkdir(parents=True, exist_ok=True)
        targets = [output / f"{path.stem}_recon.h5" for path in src]
    else:
        targets = [output]
    name = src[0].name if len(src) == 1 else f"{len(src)} files"
    with _progress() as bar:
        task = bar.add_task(f"reconstructing {name}", total=None)

        def report(done: int, total: int, link: str | None) -> None:
            bar.update(task, completed=done, total=total,
                       description=f"reconstructing {name}" + (f" (dashboard {link})" if link else ""))

        results = reconstruct_files(src, chosen, workers=workers, progress=report)
    for path, target, result in zip(src, targets, results, strict=True):
        write_recon(result, target, path)
        *_, ny, nx = result.images.shape
        out.print(f"wrote {target} ({result.recipe.method}, {result.images.size // (ny * nx)} image(s) of "
                  f"{nx}x{ny})", highlight=False)
        for warning in result.warnings:
            err.print(f"[yellow]warning:[/] {warning}", highlight=False)
        if export_to is not None:
            kind, directory = export_to
            directory = directory if len(src) == 1 else directory / path.stem
            paths = export(target, kind.value, directory)
            out.print(f"exported {len(paths)} {kind.value} file(s) to {directory}", highlight=False)


@app.command()
@reports_errors
def quality(
    files: Annotated[list[Path], typer.Argument(
        help="REF TEST...: the reference (MRD images, or a phantom raw file with its ground truth) then the "
             "reconstructions; with --no-reference, only reconstructions.")],
    no_reference: Annotated[bool, typer.Option("--no-reference", help="Measures that need no ground truth: "
                                               "two-region SNR, gradient entropy, Tenengrad sharpness.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """SSIM, PSNR and NMSE (fastMRI definitions) of reconstructions against a reference, as a table."""
    from cloudmri_kernel.errors import InvalidDataError, UsageError
    from cloudmri_kernel.quality import compare, format_table, gradient_entropy, snr_background, tenengrad, to_dict
    from cloudmri_kernel.quality.volumes import load_volume

    if no_reference:
        rows = []
        for path in files:
            volume = load_volume(path)
            try:
                snr = float(np.mean([snr_background(image) for image in volume]))
            except ValueError as exc:
                raise InvalidDataError(f"no two-region SNR: {exc}", path) from None
            rows.append({"method": path.stem, "snr": snr,
                         "gradient_entropy": float(np.mean([gradient_entropy(image) for image in volume])),
                         "tenengrad": float(np.mean([tenengrad(image) for image in volume]))})
        if as_json:
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            return
        table = Table(show_header=True)
        for column in ("method", "SNR (two-region)", "gradient entropy", "Tenengrad"):
            table.add_column(column)
        for row in rows:
            table.add_row(row["method"], f"{row['snr']:.1f}", f"{row['gradient_entropy']:.3f}",
                          f"{row['tenengrad']:.4g}")
        out.print(table)
        return
    if len(files) < 2:
        raise UsageError("give a reference and at least one reconstruction (or --no-reference)")
    ref = load_volume(files[0])
    rows = compare(ref, {path.stem: load_volume(path, like=ref) for path in files[1:]})
    if as_json:
        sys.stdout.write(json.dumps(to_dict(rows), indent=2) + "\n")
    else:
        out.print(format_table(rows), highlight=False)


@config_app.command("show")
@reports_errors
def config_show(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Print every setting's effective value, its environment variable and its help text."""
    from cloudmri_kernel.config import Settings, settings

    current = settings()
    if as_json:
        sys.stdout.write(json.dumps(current.model_dump(mode="json"), indent=2) + "\n")
        return
    table = Table(show_header=True)
    for column in ("setting", "value", "help"):
        table.add_column(column)
    for name, field in Settings.model_fields.items():
        table.add_row(f"CLOUDMRI_{name.upper()}", str(getattr(current, name)), field.description or "")
    out.print(table)


# The sub-command modules register their commands on `app` when imported.
from cloudmri_kernel import cli_dl, cli_fl, cli_ledger, cli_platform, cli_teach  # noqa: E402,F401
