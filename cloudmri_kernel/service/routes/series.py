"""Reconstructed series: metadata, the MRD image file, and images for viewers (PNG or NumPy arrays)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from cloudmri_kernel.catalog.models import Dataset, Series
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.service.deps import DB, Caller, Service, fetch, prefetched
from cloudmri_kernel.service.images import npy_bytes, png_bytes, select_image
from cloudmri_kernel.service.policy import check_dataset
from cloudmri_kernel.service.schemas import Problem, SeriesOut

router = APIRouter(tags=["series"])
ERRORS = {403: {"model": Problem}, 404: {"model": Problem}}


def visible_series(db, request, caller, series_id) -> Series:
    series = fetch(db, Series, series_id, request)
    check_dataset(db, caller, db.get(Dataset, series.dataset_id), "read-images")
    return series


@router.get("/series/{series_id}", response_model=SeriesOut, responses=ERRORS)
def get_series(series_id: str, request: Request, caller: Caller, db: DB) -> Series:
    return visible_series(db, request, caller, series_id)


@router.get("/series/{series_id}/file", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-hdf5": {}}}, **ERRORS})
def download_series(series_id: str, request: Request, caller: Caller, db: DB, service: Service):
    """The MRD image file (with its recipe in each image's attributes)."""
    series = visible_series(db, request, caller, series_id)
    return StreamingResponse(prefetched(service.store.open(series.site, series.sha256)),
                             media_type="application/x-hdf5",
                             headers={"Content-Length": str(series.size), "X-Content-SHA256": series.sha256,
                                      "Content-Disposition": f'attachment; filename="{series.id}.h5"'})


async def _volume(request: Request, caller, series_id: str, service):
    def load():
        with service.catalog.session() as db:
            series = visible_series(db, request, caller, series_id)
            return service.images.volume(service.store, series.site, series.sha256, service.work_dir)

    return await run_in_threadpool(load)


@router.get("/series/{series_id}/images/{index}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, 400: {"model": Problem}, **ERRORS})
async def image_png(series_id: str, index: int, request: Request, caller: Caller, service: Service,
                    low: Annotated[float | None, Query(allow_inf_nan=False)] = None,
                    high: Annotated[float | None, Query(allow_inf_nan=False)] = None) -> Response:
    """One image as an 8-bit PNG; window ``low``…``high`` (default 0 to the 99.5th percentile)."""
    if (low is None) != (high is None):
        raise UsageError("give both low and high for a window, or neither")
    volume = await _volume(request, caller, series_id, service)
    image = select_image(volume, index)
    data = await run_in_threadpool(png_bytes, image, None if low is None else (low, high))
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/series/{series_id}/array", response_class=Response,
            responses={200: {"content": {"application/x-npy": {}}}, 400: {"model": Problem}, **ERRORS})
async def image_array(series_id: str, request: Request, caller: Caller, service: Service,
                      index: Annotated[int | None, Query(description="One image; default all")] = None
                      ) -> Response:
    """Magnitude images as a NumPy ``.npy`` float32 array: (n, y, x), or (y, x) for one ``index``."""
    volume = await _volume(request, caller, series_id, service)
    array = volume if index is None else select_image(volume, index)
    return Response(await run_in_threadpool(npy_bytes, array), media_type="application/x-npy",
                    headers={"X-Array-Shape": ",".join(map(str, array.shape))})
