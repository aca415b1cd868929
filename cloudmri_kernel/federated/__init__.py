"""Federated training of the reconstruction network across hospital sites, with Flower.

Each site is a Flower ClientApp (:mod:`.site`) that trains the unrolled network
(:mod:`cloudmri_kernel.recon.unrolled`) on its own data only (:mod:`.sites`); the server side
(:mod:`.aggregation`) averages the weights with a Flower strategy (FedAvg, FedProx, FedAdam, FedAvgM, trimmed
mean, Krum) guarded against sites that drop out or send non-finite or absurd weights; :mod:`.experiment` runs the
rounds, keeps the global model of every round by its SHA-256, optionally has every site fine-tune the final model
on its own data and keep it (personalization), and records configuration, participants and per-site metrics in
the catalog. :mod:`.simulation` delivers Flower's messages in one process (notebooks, tests).

Flower's telemetry, update check and runtime dependency installation are switched off on import
(:data:`FLOWER_ENV`): a hospital's node must not call home or install packages.

References:
    McMahan B et al. Communication-efficient learning of deep networks from decentralized data (FedAvg).
    AISTATS 2017.
    Beutel DJ et al. Flower: a friendly federated learning research framework. arXiv 2007.14390.
"""

import os

FLOWER_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
              "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
for _name, _value in FLOWER_ENV.items():
    os.environ.setdefault(_name, _value)
