"""Trained networks as files: weights plus a card that names their architecture, training and SHA-256.

A model is two files, ``NAME.pt`` (the ``state_dict``, loaded with ``weights_only=True`` so a file can never run
code) and ``NAME.json`` (the card: architecture and configuration, how it was trained, its figures, and the
SHA-256 of the weights file). Loading recomputes the hash and refuses a file that does not match its card, so a
swapped or damaged weights file never reconstructs an image. The hash is what the catalog's ``models`` table
and the ledger record.

A model reference (``cloudmri recon --method dl --model REF``) is a path to a ``.pt`` file, the name of a model
shipped with the package (:data:`SHIPPED_DIR`) or of a file in the models directory (``CLOUDMRI_MODELS_DIR``,
default ``~/.cloudmri/models``; federated runs write theirs under it), or a model's SHA-256 (a unique prefix of
at least 8 hex digits will do): the identity the catalog and the ledger record.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from cloudmri_kernel.digest import file_sha256
from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.recon.unrolled import MoDL, MoDLConfig

SHIPPED_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = "modl-synthetic"
ARCHITECTURES = {"modl": (MoDL, MoDLConfig)}


def models_dir() -> Path:
    return Path(os.environ.get("CLOUDMRI_MODELS_DIR", Path.home() / ".cloudmri" / "models"))


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)  # weights are not secret; every user's server loads them
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def save_model(net: MoDL, path: str | Path, card: dict | None = None) -> dict:
    """Write ``path`` (.pt) and its card beside it (.json), both atomically; returns the card."""
    path = Path(path)
    if path.suffix != ".pt":
        raise UsageError("a model file ends in .pt", path)
    state = {name: tensor.detach().cpu() for name, tensor in net.state_dict().items()}
    _atomic_write(path, lambda handle: torch.save(state, handle))
    full = {**(card or {}), "architecture": "modl", "config": net.config.to_dict(),
            "sha256": file_sha256(path), "parameters": sum(t.numel() for t in state.values())}
    _atomic_write(path.with_suffix(".json"),
                  lambda handle: handle.write(json.dumps(full, indent=2, sort_keys=True).encode() + b"\n"))
    return full


def _cards() -> list[Path]:
    return [card for directory in (SHIPPED_DIR, models_dir()) if directory.is_dir()
            for card in sorted(directory.rglob("*.json")) if card.with_suffix(".pt").is_file()]


def resolve(reference: str | Path) -> Path:
    """The .pt file a model reference names (see the module), or a UsageError listing what exists.

    A reference of 8 to 64 hex digits is a SHA-256 (or its unique prefix), the identity the catalog and the ledger
    record: the model whose card has it, in the shipped models or anywhere under the models directory.
    """
    candidate = Path(reference)
    if candidate.suffix == ".pt" and candidate.is_file():
        return candidate
    for directory in (SHIPPED_DIR, models_dir()):
        path = directory / f"{reference}.pt"
        if path.is_file():
            return path
    text = str(reference).lower()
    if 8 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text):
        matches = {card.with_suffix(".pt") for card in _cards()
                   if str(_card_or_empty(card).get("sha256", "")).startswith(text)}
        if len(matches) == 1:
            return matches.pop()
        if len(matches) > 1:
            raise UsageError(f"the hash prefix {text} names {len(matches)} models: give more digits")
    known = sorted({p.stem for d in (SHIPPED_DIR, models_dir()) if d.is_dir() for p in d.glob("*.pt")})
    raise UsageError(f"no model {str(reference)!r}: give a .pt file, a SHA-256 or one of: {', '.join(known) or 'none'}")


def _card_or_empty(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def read_card(path: Path) -> dict:
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise InvalidDataError("the model has no card (NAME.json beside NAME.pt) to check its hash against", path)
    try:
        return json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidDataError(f"the model card is not valid JSON ({exc})", card_path) from None


def load_model(reference: str | Path, device: str = "cpu", expected_sha256: str | None = None) -> tuple[MoDL, dict]:
    """The network and its card; refuses weights whose SHA-256 differs from the card (or ``expected_sha256``)."""
    path = resolve(reference)
    card = read_card(path)
    actual = file_sha256(path)
    for source, wanted in (("its card", card.get("sha256")), ("the record", expected_sha256)):
        if wanted is not None and wanted != actual:
            raise InvalidDataError(f"the model's SHA-256 {actual[:12]}… does not match {source} ({wanted[:12]}…): "
                                   "refusing to load it", path)
    if card.get("architecture") not in ARCHITECTURES:
        raise InvalidDataError(f"unknown architecture {card.get('architecture')!r}", path)
    network, config_type = ARCHITECTURES[card["architecture"]]
    net = network(config_type(**card.get("config", {})))
    try:
        net.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    except (RuntimeError, KeyError, EOFError, ValueError) as exc:
        raise InvalidDataError(f"the weights do not fit the card's network ({exc})", path) from None
    return net.to(device).eval(), card
