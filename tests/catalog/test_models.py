"""Every model stored and read back on both databases, its constraints enforced, its times in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, StatementError

from cloudmri_kernel.catalog.models import (
    Assignment,
    AuditEvent,
    Dataset,
    Experiment,
    Grant,
    Job,
    Label,
    Model,
    QualityScore,
    Report,
    Series,
    Site,
    Subject,
    Upload,
)

RAW_SHA = "a" * 64
IMAGES_SHA = "b" * 64
ACQUIRED = datetime(2024, 3, 5, 14, 30, 15, 123456, tzinfo=UTC)
EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
FIVE_GIB = 5 << 30


@pytest.fixture
def seeded(catalog):
    """Two sites, a subject, a raw dataset and its reconstructed series."""
    with catalog.session() as session:
        session.add_all([Site(name="charite", display_name="Charité Berlin"),
                         Site(name="tuebingen", display_name="Universitätsklinikum Tübingen")])
        session.flush()
        session.add(Subject(id="subject1", site="charite", pseudonym="P-7f3a"))
        session.flush()
        session.add(Dataset(id="dataset1", site="charite", subject_id="subject1", sha256=RAW_SHA, size=FIVE_GIB,
                            filename="knee.h5", uploaded_by="ana", acquired_at=ACQUIRED, protocol="t1_tse",
                            sequence="TSE", field_strength_t=2.89, vendor="SIEMENS",
                            summary={"matrix": [320, 320, 1], "coils": 15, "encoding": {"accel": 2.0}}))
        session.flush()
        session.add(Series(id="series1", dataset_id="dataset1", site="charite", sha256=IMAGES_SHA, size=4096,
                           method="sense", recipe={"method": "sense", "lambda": 0.01}, code_version="0.1.0",
                           source_sha256=RAW_SHA, shape=[1, 320, 320], created_by="ana"))
    return catalog


def test_every_model_is_stored_and_read_back_with_its_relations(seeded):
    with seeded.session() as session:
        session.add_all([
            Job(id="job1", dataset_id="dataset1", user="ana", recipe={"method": "sense"}, status="done",
                progress=1.0, series_id="series1"),
            Upload(id="upload1", site="charite", user="ana", filename="knee.h5", size=FIVE_GIB, sha256=RAW_SHA,
                   anonymize="default", status="complete", dataset_id="dataset1"),
            Label(series_id="series1", reader="ben", vocabulary=["meniscus"],
                  rois=[{"label": "meniscus", "polygon": [[1, 2], [3, 4], [5, 1]]}], mask_sha256="c" * 64),
            QualityScore(series_id="series1", reader="ben", score=4, criteria={"noise": 4, "artifacts": 5}),
            Report(dataset_id="dataset1", author="ben", findings="Intact menisci.", impression="Normal knee.",
                   status="signed", sha256="d" * 64, signed_at=ACQUIRED + timedelta(days=1)),
            Assignment(dataset_id="dataset1", reader="ben", assigned_by="ana", priority=2, reason="second read"),
            Grant(dataset_id="dataset1", grantee_site="tuebingen", scope="read-images", granted_by="ana",
                  reason="multi-site study", expires_at=EXPIRES),
            Grant(dataset_id="dataset1", grantee_user="carla", scope="read-raw", granted_by="ana",
                  expires_at=EXPIRES),
            Experiment(id="experiment1", name="fedavg-knee", config={"rounds": 3}, sites=["charite", "tuebingen"],
                       metrics=[{"round": 1, "loss": 0.5}], created_by="ana"),
        ])
        session.flush()
        session.add(Model(name="varnet", sha256="e" * 64, site="charite", experiment_id="experiment1", round=3,
                          metrics={"ssim": 0.91}))
        session.add_all([AuditEvent(user="ana", action="dataset.upload", category="data", outcome="success",
                                    dataset_id="dataset1", details={"bytes": FIVE_GIB}),
                         AuditEvent(user="ben", action="series.read", category="access", outcome="success",
                                    http_method="GET", path="/api/series/series1", status_code=200)])

    with seeded.session() as session:
        dataset = session.get(Dataset, "dataset1")
        assert (dataset.size, dataset.field_strength_t, dataset.acquired_at) == (FIVE_GIB, 2.89, ACQUIRED)
        assert dataset.summary == {"matrix": [320, 320, 1], "coils": 15, "encoding": {"accel": 2.0}}
        assert session.execute(
            select(Subject.pseudonym, Site.display_name, Series.shape, Job.status)
            .join(Dataset, Dataset.subject_id == Subject.id).join(Site, Site.name == Dataset.site)
            .join(Series, Series.dataset_id == Dataset.id).join(Job, Job.series_id == Series.id)
        ).one() == ("P-7f3a", "Charité Berlin", [1, 320, 320], "done")
        upload = session.get(Upload, "upload1")
        assert (upload.size, upload.dataset_id, upload.error) == (FIVE_GIB, "dataset1", None)
        label = session.scalars(select(Label).where(Label.series_id == "series1")).one()
        assert (label.name, label.rois[0]["polygon"]) == ("default", [[1, 2], [3, 4], [5, 1]])
        assert session.execute(select(QualityScore.score, QualityScore.criteria, QualityScore.comment)).one() \
            == (4, {"noise": 4, "artifacts": 5}, "")
        report = session.scalars(select(Report)).one()
        assert (report.template, report.status, report.signed_at) == ("generic", "signed", ACQUIRED + timedelta(1))
        assert session.execute(select(Assignment.reader, Assignment.status, Assignment.priority)).one() \
            == ("ben", "assigned", 2)
        grants = session.execute(select(Grant.scope, Grant.grantee_user, Site.display_name)
                                 .outerjoin(Site, Site.name == Grant.grantee_site).order_by(Grant.scope)).all()
        assert [tuple(grant) for grant in grants] == [("read-images", None, "Universitätsklinikum Tübingen"),
                                                      ("read-raw", "carla", None)]
        assert session.execute(select(Model.name, Experiment.name, Experiment.sites, Model.metrics)
                               .join(Experiment, Experiment.id == Model.experiment_id)).one() \
            == ("varnet", "fedavg-knee", ["charite", "tuebingen"], {"ssim": 0.91})
        events = session.execute(select(AuditEvent.id, AuditEvent.action, AuditEvent.details, AuditEvent.status_code)
                                 .order_by(AuditEvent.id)).all()
        assert [tuple(event) for event in events] == [(1, "dataset.upload", {"bytes": FIVE_GIB}, None),
                                                      (2, "series.read", {}, 200)]


def test_updated_at_moves_on_update(seeded):
    with seeded.session() as session:
        session.add(Upload(id="upload1", site="charite", user="ana", filename="knee.h5", size=10, sha256=RAW_SHA))
    with seeded.session() as session:
        upload = session.get(Upload, "upload1")
        created = upload.updated_at
        upload.status = "failed"
        upload.error = {"code": "hash_mismatch"}
    with seeded.session() as session:
        upload = session.get(Upload, "upload1")
        assert (upload.status, upload.error) == ("failed", {"code": "hash_mismatch"})
        assert upload.updated_at > created


def test_the_same_raw_file_may_belong_to_two_sites(seeded):
    with seeded.session() as session:
        session.add(Dataset(site="tuebingen", sha256=RAW_SHA, size=1, filename="knee.h5", uploaded_by="carla"))
    with seeded.session() as session:
        assert sorted(session.scalars(select(Dataset.site).where(Dataset.sha256 == RAW_SHA))) == ["charite",
                                                                                                 "tuebingen"]


@pytest.mark.parametrize("score", [1, 5])
def test_quality_scores_at_the_ends_of_the_scale_are_accepted(seeded, score):
    with seeded.session() as session:
        session.add(QualityScore(series_id="series1", reader="ben", score=score))
    with seeded.session() as session:
        assert session.scalars(select(QualityScore.score)).all() == [score]


def violation(constraint: str, sqlite_message: str | None = None) -> dict[str, str]:
    """What each database says about a violated constraint (SQLite names check constraints only)."""
    return {"postgresql": f'"{constraint}"', "sqlite": sqlite_message or f"CHECK constraint failed: {constraint}"}


CONSTRAINTS = {
    "job-status": (lambda: Job(dataset_id="dataset1", user="ana", status="paused"), violation("ck_jobs_status")),
    "upload-status": (lambda: Upload(site="charite", user="ana", filename="a.h5", size=1, sha256=RAW_SHA,
                                     status="done"), violation("ck_uploads_status")),
    "report-status": (lambda: Report(dataset_id="dataset1", author="ben", status="final"),
                      violation("ck_reports_status")),
    "assignment-status": (lambda: Assignment(dataset_id="dataset1", reader="ben", assigned_by="ana",
                                             status="closed"), violation("ck_assignments_status")),
    "grant-scope": (lambda: Grant(dataset_id="dataset1", grantee_user="carla", scope="write", granted_by="ana",
                                  expires_at=EXPIRES), violation("ck_grants_scope")),
    "grant-no-grantee": (lambda: Grant(dataset_id="dataset1", scope="read-raw", granted_by="ana",
                                       expires_at=EXPIRES), violation("ck_grants_one_grantee")),
    "grant-two-grantees": (lambda: Grant(dataset_id="dataset1", grantee_user="carla", grantee_site="tuebingen",
                                         scope="read-raw", granted_by="ana", expires_at=EXPIRES),
                           violation("ck_grants_one_grantee")),
    "score-below-1": (lambda: QualityScore(series_id="series1", reader="ben", score=0),
                      violation("ck_quality_scores_score_range")),
    "score-above-5": (lambda: QualityScore(series_id="series1", reader="ben", score=6),
                      violation("ck_quality_scores_score_range")),
    "dataset-same-site-and-hash": (
        lambda: Dataset(site="charite", sha256=RAW_SHA, size=1, filename="copy.h5", uploaded_by="ben"),
        violation("uq_datasets_site_sha256", "UNIQUE constraint failed: datasets.site, datasets.sha256")),
    "dataset-unknown-site": (
        lambda: Dataset(site="nowhere", sha256=RAW_SHA, size=1, filename="a.h5", uploaded_by="ben"),
        violation("fk_datasets_site_sites", "FOREIGN KEY constraint failed")),
    "subject-same-pseudonym": (lambda: Subject(site="charite", pseudonym="P-7f3a"),
                               violation("uq_subjects_site_pseudonym", "UNIQUE constraint failed: subjects.site, "
                                         "subjects.pseudonym")),
    "series-unknown-dataset": (
        lambda: Series(dataset_id="nope", site="charite", sha256=IMAGES_SHA, size=1, method="sense",
                       code_version="0.1.0", source_sha256=RAW_SHA, created_by="ana"),
        violation("fk_series_dataset_id_datasets", "FOREIGN KEY constraint failed")),
    "model-same-hash": (lambda: Model(name="copy", sha256="e" * 64),
                        violation("uq_models_sha256", "UNIQUE constraint failed: models.sha256")),
}


@pytest.mark.parametrize("case", list(CONSTRAINTS))
def test_constraints_are_enforced_by_the_database(seeded, case):
    with seeded.session() as session:
        session.add(Model(name="varnet", sha256="e" * 64))
    make_row, messages = CONSTRAINTS[case]
    with pytest.raises(IntegrityError) as error, seeded.session() as session:
        session.add(make_row())
    assert messages[seeded.engine.dialect.name] in str(error.value.orig)


def test_each_reader_has_one_label_set_of_a_name_per_series(seeded):
    with seeded.session() as session:
        session.add_all([Label(series_id="series1", reader="ben"), Label(series_id="series1", reader="carla")])
    duplicate = "uq_labels_series_id_reader_name|labels.series_id, labels.reader, labels.name"
    with pytest.raises(IntegrityError, match=duplicate), seeded.session() as session:
        session.add(Label(series_id="series1", reader="ben"))
    with seeded.session() as session:
        assert sorted(session.scalars(select(Label.reader))) == ["ben", "carla"]


def test_timestamps_come_back_timezone_aware_in_utc(catalog):
    before = datetime.now(UTC)
    berlin = datetime(2024, 6, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    with catalog.session() as session:
        session.add(Site(name="charite"))
        session.add(AuditEvent(action="login", category="auth", outcome="success", timestamp=berlin))
    after = datetime.now(UTC)
    with catalog.session() as session:
        created = session.scalars(select(Site.created_at)).one()
        stamp = session.scalars(select(AuditEvent.timestamp)).one()
    assert created.tzinfo is UTC and before <= created <= after
    assert stamp.tzinfo is UTC and stamp == berlin and (stamp.hour, stamp.minute) == (7, 0)


def test_naive_timestamps_are_refused(catalog):
    with pytest.raises(StatementError, match="catalog timestamps must be timezone-aware"), \
            catalog.session() as session:
        session.add(Site(name="charite", created_at=datetime(2024, 6, 1, 9, 0)))
