"""Zero-filled versus GRAPPA on the real Siemens R=3 scan: the figure in docs/reconstruction.md and its numbers.

    python benchmarks/grappa_figure.py --out docs/images/grappa_siemens.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cloudmri_kernel.recon.engine import reconstruct_file
from cloudmri_kernel.recon.grappa import ghost_energy_fraction, object_support
from cloudmri_kernel.recon.recipe import IfftRecipe

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "siemens_ssfp_grappa_r3.h5"


def panel(image: np.ndarray, label: str, top: float) -> Image.Image:
    scaled = (np.clip(image / top, 0, 1) * 255).astype(np.uint8)
    picture = Image.fromarray(scaled).resize((image.shape[1] * 2, image.shape[0] * 2), Image.NEAREST)
    ImageDraw.Draw(picture).text((6, 6), label, fill=255)
    return picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("docs/images/grappa_siemens.png"))
    args = parser.parse_args()
    grappa = reconstruct_file(args.data).images[0, 0]
    zero_filled = reconstruct_file(args.data, IfftRecipe()).images[0, 0]
    support = object_support(grappa)
    ghosts = {name: ghost_energy_fraction(image, support, 3)
              for name, image in (("zero-filled", zero_filled), ("GRAPPA", grappa))}
    top = float(np.percentile(grappa, 99.5))
    left, right = panel(zero_filled, "zero-filled (R=3)", top), panel(grappa, "GRAPPA", top)
    figure = Image.new("L", (left.width + right.width + 8, left.height), 0)
    figure.paste(left, (0, 0))
    figure.paste(right, (left.width + 8, 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out)
    for name, value in ghosts.items():
        print(f"{name}: {100 * value:.3f}% of the image energy at the R=3 ghost positions")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
