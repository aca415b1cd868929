"""Catalog rows to response bodies where a row alone is not enough."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cloudmri_kernel.catalog.models import Dataset, Subject
from cloudmri_kernel.service.schemas import DatasetOut


def dataset_out(db: Session, dataset: Dataset) -> DatasetOut:
    out = DatasetOut.model_validate(dataset)
    if dataset.subject_id:
        subject = db.get(Subject, dataset.subject_id)
        out.subject = subject.pseudonym if subject else None
    return out
