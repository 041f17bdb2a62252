"""The FastAPI application of ``facerec serve``: the JSON API, its error answers and the page.

    POST /api/verify    two photos (multipart: a, b; index_a, index_b; threshold) -> VerifyOut
    GET  /api/model     the model card's essentials -> ModelOut
    GET  /              the page (static/index.html), a client of the API above
    GET  /docs          the OpenAPI page

Inference runs in the thread pool (never on the event loop); the :class:`Service` lock queues
it. Every refusal is a 4xx JSON ``{"error": "..."}`` naming the upload at fault; anything
unexpected is a 500 with one line (the traceback goes to the server's log, not the client).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from facerec.serve.schemas import ErrorOut, ModelOut, VerifyOut
from facerec.serve.service import Service
from facerec.serve.uploads import MAX_BYTES, BadUpload, read_upload, to_photo

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).with_name("static")
ERRORS = {status: {"model": ErrorOut} for status in (413, 415, 422)}
log = logging.getLogger("facerec.serve")

PhotoFile = Annotated[UploadFile, File(description="a photo: JPEG, PNG, WebP or BMP")]
FaceIndex = Annotated[int, Form(ge=0, description="which of the photo's faces (0: the first)")]
Threshold = Annotated[
    float | None, Form(gt=0, le=4, description="squared distance (default: the model's)")
]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BadUpload)
    async def bad_upload(_: Request, error: BadUpload) -> JSONResponse:
        return _error(error.status, str(error))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("request failed")
        return _error(500, f"internal error ({type(error).__name__}); see the server's log")


def create_app(service: Service, max_bytes: int = MAX_BYTES) -> FastAPI:
    """The application serving ``service``.

    Args:
        service: the model (and gallery) behind the API.
        max_bytes: the largest upload accepted, per file.
    """
    app = FastAPI(title="facerec", summary="Try a face-recognition model on your own photos.",
                  version="1")  # fmt: skip
    app.state.service = service
    _add_error_handlers(app)

    @app.get("/api/model", response_model=ModelOut)
    def model() -> ModelOut:
        """The model card's essentials, how photos are prepared and the stored threshold."""
        return service.model_info()

    @app.post("/api/verify", response_model=VerifyOut, responses=ERRORS)
    async def verify(
        a: PhotoFile,
        b: PhotoFile,
        index_a: FaceIndex = 0,
        index_b: FaceIndex = 0,
        threshold: Threshold = None,
    ) -> VerifyOut:
        """Same person or not: each photo's faces and crops, the similarity and the decision."""
        raw = [await read_upload(a, max_bytes), await read_upload(b, max_bytes)]
        photos = await run_in_threadpool(lambda: tuple(to_photo(*r) for r in raw))
        return await run_in_threadpool(service.verify, photos, (index_a, index_b), threshold)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
