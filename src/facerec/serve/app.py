"""The FastAPI application of ``facerec serve``: the JSON API, its error answers and the page.

    POST /api/verify    two photos (multipart: a, b; index_a, index_b; threshold) -> VerifyOut
    POST /api/identify  one photo (photo; k; threshold, a cosine) -> IdentifyOut
    POST /api/enroll    a name and photos (name; photos, 1 to 20) -> EnrollOut
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

from facerec.serve.schemas import EnrollOut, ErrorOut, IdentifyOut, ModelOut, VerifyOut
from facerec.serve.service import Service
from facerec.serve.uploads import MAX_BYTES, BadUpload, Photo, read_upload, to_photo

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).with_name("static")
ERRORS = {status: {"model": ErrorOut} for status in (413, 415, 422)}
GALLERY_ERRORS = {**ERRORS, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}}
log = logging.getLogger("facerec.serve")

PhotoFile = Annotated[UploadFile, File(description="a photo: JPEG, PNG, WebP or BMP")]
FaceIndex = Annotated[int, Form(ge=0, description="which of the photo's faces (0: the first)")]
Cosine = Annotated[float | None, Form(ge=-1, le=1, description="cosine (default: see /docs)")]
TopK = Annotated[int, Form(ge=1, le=20, description="identities listed per face")]
Photos = Annotated[list[UploadFile], File(description="1 to 20 photos of the person")]
MAX_PHOTOS = 20
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


async def decode(uploads: list[UploadFile], max_bytes: int) -> list[Photo]:
    """Read every upload within ``max_bytes``, then decode them off the event loop."""
    raw = [await read_upload(upload, max_bytes) for upload in uploads]
    return await run_in_threadpool(lambda: [to_photo(*r) for r in raw])


def _limit_bodies(app: FastAPI, max_bytes: int) -> None:
    """Refuse a request body larger than the most photos one request takes, from its
    ``Content-Length``, before the multipart parser spools it anywhere (411 without one)."""
    limit = (MAX_PHOTOS + 1) * max_bytes

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return _error(411, "a request body needs a Content-Length")
            if int(length) > limit:
                most = f"{MAX_PHOTOS} photos of at most {max_bytes / 2**20:g} MiB"
                return _error(413, f"request larger than {limit / 2**20:g} MiB ({most})")
        return await call_next(request)


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
    _limit_bodies(app, max_bytes)

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
        photos = await decode([a, b], max_bytes)
        return await run_in_threadpool(service.verify, tuple(photos), (index_a, index_b), threshold)

    @app.post("/api/identify", response_model=IdentifyOut, responses=GALLERY_ERRORS)
    async def identify(photo: PhotoFile, k: TopK = 5, threshold: Cosine = None) -> IdentifyOut:
        """Who is in the photo: each face's top-k gallery identities, "unknown" below the
        threshold (given, else the gallery's calibrated one, else the model's as a cosine)."""
        (decoded,) = await decode([photo], max_bytes)
        return await run_in_threadpool(service.identify, decoded, k, threshold)

    @app.post("/api/enroll", response_model=EnrollOut, responses=GALLERY_ERRORS)
    async def enroll(name: Annotated[str, Form(max_length=200)], photos: Photos) -> EnrollOut:
        """Add a person (the largest face of each photo) to the gallery, written at once."""
        if len(photos) > MAX_PHOTOS:
            raise BadUpload(f"photos: at most {MAX_PHOTOS} at once, got {len(photos)}")
        decoded = await decode(photos, max_bytes)
        return await run_in_threadpool(service.enroll, name, decoded)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
