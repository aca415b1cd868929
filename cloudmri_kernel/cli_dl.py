"""``cloudmri dl``: train the unrolled reconstruction network on synthetic data and list trained models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cloudmri_kernel.cli import _progress, app, out, reports_errors

dl_app = typer.Typer(help="Deep-learning reconstruction: train a model, list models.", no_args_is_help=True)
app.add_typer(dl_app, name="dl")


@dl_app.command("train")
@reports_errors
def dl_train(
    output: Annotated[Path, typer.Option("-o", "--output", help="Model file to write (NAME.pt, card NAME.json).")],
    matrix: Annotated[int, typer.Option(help="Image side of the synthetic samples.")] = 64,
    coils: Annotated[int, typer.Option(help="Receive coils.")] = 8,
    accel: Annotated[int, typer.Option(help="Undersampling outside the calibration lines.")] = 4,
    calib: Annotated[int, typer.Option(help="Fully sampled centre lines.")] = 12,
    noise: Annotated[float, typer.Option(help="Noise standard deviation relative to the peak.")] = 0.01,
    pattern: Annotated[str, typer.Option(help="uniform or poisson.")] = "poisson",
    contrast: Annotated[str, typer.Option(help="t1 or t2.")] = "t1",
    samples: Annotated[int, typer.Option(min=1, help="Training samples.")] = 256,
    epochs: Annotated[int, typer.Option(min=1)] = 4,
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Train MoDL on physics-informed synthetic data; write the weights and a card with its figures."""
    from cloudmri_kernel.recon.model_files import save_model
    from cloudmri_kernel.recon.synthetic import SyntheticSpec
    from cloudmri_kernel.recon.training import train_on_synthetic

    spec = SyntheticSpec(matrix=matrix, coils=coils, accel=accel, calib=calib, noise=noise, pattern=pattern,
                         contrast=contrast)
    steps = epochs * -(-samples // batch_size)
    with _progress() as bar:
        task = bar.add_task("training", total=steps)
        net, card = train_on_synthetic(spec, train_count=samples, epochs=epochs, batch_size=batch_size, lr=lr,
                                       seed=seed, device=device,
                                       on_step=lambda step, loss: bar.update(
                                           task, completed=step, description=f"training (loss {loss:.4f})"))
    card = save_model(net, output, card)
    figures = card["evaluation"]
    out.print(f"wrote {output} (sha256 {card['sha256']}); held-out SSIM {figures['model']['ssim']:.3f} "
              f"(zero-filled {figures['zero_filled']['ssim']:.3f}), PSNR {figures['model']['psnr']:.1f} dB "
              f"(zero-filled {figures['zero_filled']['psnr']:.1f} dB)", highlight=False)


@dl_app.command("models")
@reports_errors
def dl_models(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Models that `cloudmri recon --method dl --model NAME|SHA256` can use (shipped ones, and every model under
    the models directory, federated rounds included), with their hashes and figures."""
    from cloudmri_kernel.recon.model_files import SHIPPED_DIR, models_dir, read_card

    rows = []
    for directory in (SHIPPED_DIR, models_dir()):
        for path in sorted(directory.rglob("*.pt")) if directory.is_dir() else ():
            card = read_card(path)
            model = card.get("evaluation", {}).get("model", {})
            rows.append({"name": str(path.relative_to(directory).with_suffix("")), "path": str(path),
                         "sha256": card.get("sha256"),
                         "parameters": card.get("parameters"), "ssim": model.get("ssim"), "psnr": model.get("psnr")})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "sha256", "parameters", "held-out SSIM", "PSNR (dB)")
    for row in rows:
        table.add_row(row["name"], (row["sha256"] or "")[:16], str(row["parameters"]),
                      f"{row['ssim']:.3f}" if row["ssim"] is not None else "",
                      f"{row['psnr']:.1f}" if row["psnr"] is not None else "")
    out.print(table)
