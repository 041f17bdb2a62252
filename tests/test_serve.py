"""``facerec serve``'s JSON API on a tiny model and real LFW photos (FastAPI's TestClient, and
uvicorn on 127.0.0.1 for the concurrent and load tests); the page itself: test_serve_page.py."""

from __future__ import annotations

import base64
import json
import resource
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (pip install facerec[serve])")
import httpx
from fastapi.testclient import TestClient
from serving import DIFFERENT, IMAGES, MANY_FACES, SAME, app_for, tiny_folder

from facerec.cli import commands


@pytest.fixture(scope="module")
def client(serve_folder) -> TestClient:
    return TestClient(app_for(serve_folder, max_bytes=2**20))


def upload(path: Path, field: str) -> tuple[str, tuple[str, bytes, str]]:
    return field, (path.name, path.read_bytes(), "image/jpeg")


def pair_files(lfw_root: Path, pair) -> list:
    return [upload(lfw_root / IMAGES / p, f) for p, f in zip(pair, "ab", strict=True)]


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's
    header: refused before anything is decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))  # fmt: skip


def test_model_shows_the_card_essentials_and_the_stored_threshold(client, serve_folder):
    model = client.get("/api/model").json()
    assert model["backbone"].startswith("MobileFaceNet") and model["embedding_size"] == 8
    assert model["results"]["lfw_devtest"]["accuracy"] == pytest.approx(0.6)
    assert "centre crop 150" in model["preparation"] and model["gallery"] is None
    assert "threshold.json" in model["threshold"]["source"]
    stored = json.loads((serve_folder / "threshold.json").read_text())["threshold"]
    assert model["threshold"]["value"] == pytest.approx(stored)
    assert "/api/verify" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(("pair", "decision"), [(SAME, "same"), (DIFFERENT, "different")])
def test_verify_gives_the_decision_the_crops_and_the_numbers(client, lfw_root, pair, decision):
    result = client.post("/api/verify", files=pair_files(lfw_root, pair)).json()
    assert result["decision"] == decision
    assert (result["distance"] < result["threshold"]) == (decision == "same")
    assert result["distance"] == pytest.approx(2 - 2 * result["similarity"], abs=1e-6)
    for photo, name in zip(result["photos"], pair, strict=True):
        assert photo["name"] == Path(name).name and photo["method"] == "centre crop"
        assert (photo["width"], photo["height"]) == (250, 250)
        assert photo["faces"][0]["box"] == [50.0, 50.0, 200.0, 200.0]  # the 150 px centre crop
        crop = cv2.imdecode(np.frombuffer(base64.b64decode(photo["faces"][0]["crop_png"]),
                                          np.uint8), cv2.IMREAD_COLOR)  # fmt: skip
        assert crop.shape == (112, 112, 3) and crop.std() > 10  # a photo, not a blank


def test_a_threshold_given_with_the_request_decides(client, lfw_root):
    files = pair_files(lfw_root, SAME)
    result = client.post("/api/verify", files=files, data={"threshold": "0.01"}).json()
    assert result["decision"] == "different" and result["threshold_source"] == "given"


@pytest.mark.parametrize(
    ("name", "data", "status", "says"),
    [
        ("notes.jpg", b"this is a text file renamed .jpg\n", 415, "notes.jpg: not an image"),
        ("empty.png", b"", 422, "empty.png: the file is empty"),
        ("bomb.png", png_header_claiming(60000, 60000), 422, "bomb.png: refused"),
        ("big.jpg", b"\xff\xd8" + bytes(2**20), 413, "big.jpg: larger than the limit"),
        ("../../etc/passwd", b"GIF89a", 415, "passwd: not an image"),
    ],
    ids=["text-named-jpg", "empty", "pixel-bomb-header", "over-size-limit", "path-in-name"],
)
def test_a_bad_upload_is_one_clear_4xx_and_the_server_keeps_serving(
    client, lfw_root, name, data, status, says
):
    good = upload(lfw_root / IMAGES / SAME[1], "b")
    response = client.post("/api/verify", files=[("a", (name, data, "image/jpeg")), good])
    assert response.status_code == status
    assert response.json()["error"].startswith(says)
    assert "Traceback" not in response.text
    assert client.post("/api/verify", files=pair_files(lfw_root, SAME)).status_code == 200


def test_a_body_past_every_limit_is_refused_before_it_is_parsed(client):
    headers = {"content-type": "multipart/form-data; boundary=x"}
    huge = client.post("/api/verify", content=b"--x--", headers={**headers,
                       "content-length": str(2**40)})  # fmt: skip
    assert huge.status_code == 413 and "request larger than" in huge.json()["error"]

    def chunks():
        yield b"--x--"

    chunked = client.post("/api/verify", content=chunks(), headers=headers)
    assert chunked.status_code == 411


BAD_FIELDS = [
    ({"index_a": "3"}, "face 3 asked for, but 1 found"),
    ({"threshold": "9"}, "threshold"),
]


@pytest.mark.parametrize(("form", "says"), BAD_FIELDS)
def test_a_bad_field_is_a_422_naming_it(client, lfw_root, form, says):
    response = client.post("/api/verify", files=pair_files(lfw_root, SAME), data=form)
    assert response.status_code == 422 and says in response.json()["error"]
    missing = client.post("/api/verify", files=pair_files(lfw_root, SAME)[:1])
    assert missing.status_code == 422 and missing.json()["error"] == "b: Field required"


def test_an_aligned_model_shows_every_face_and_compares_the_one_picked(tmp_path, lfw_root):
    pytest.importorskip("facenet_pytorch", reason="the align extra (MTCNN)")
    client = TestClient(app_for(tiny_folder(tmp_path / "aligned", lfw_root, aligned=True)))
    files = pair_files(lfw_root, (MANY_FACES, MANY_FACES))
    picked = client.post("/api/verify", files=files, data={"index_b": "1"}).json()
    photo = picked["photos"][1]
    assert photo["method"] == "aligned" and len(photo["faces"]) == 3 and photo["chosen"] == 1
    assert all(len(face["landmarks"]) == 5 for face in photo["faces"])
    assert picked["decision"] is None and picked["threshold"] is None  # none stored
    itself = client.post("/api/verify", files=files).json()  # face 0 against itself
    assert itself["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert picked["similarity"] < 0.999  # another face than face 0


def verify_over_http(url: str, files: list) -> tuple[float, dict]:
    started = time.perf_counter()
    response = httpx.post(f"{url}/api/verify", files=files, timeout=120)
    response.raise_for_status()
    return time.perf_counter() - started, response.json()


def test_two_concurrent_requests_get_the_answers_of_two_sequential_ones(live_server, lfw_root):
    pairs = [pair_files(lfw_root, SAME), pair_files(lfw_root, DIFFERENT)]
    alone = [verify_over_http(live_server, files)[1] for files in pairs]
    with ThreadPoolExecutor(2) as pool:
        together = [r for _, r in pool.map(lambda f: verify_over_http(live_server, f), pairs)]
    assert together == alone


def rss_mib() -> float:
    """This process's resident memory now (Linux /proc), else its peak."""
    status = Path("/proc/self/status")
    if status.is_file():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("count", [48, pytest.param(200, marks=pytest.mark.slow)])
def test_a_bounded_flood_of_verify_requests(live_server, lfw_root, count, record_property):
    """``count`` verify requests, 8 at a time, over 20 LFW photos (more than the service
    remembers, so every request embeds): no error, memory bounded; latency percentiles and
    memory before/after are printed (``-s``) and recorded in the JUnit report."""
    photos = sorted((lfw_root / IMAGES).glob("A*/*_0001.jpg"))[:20]
    files = [[upload(photos[i % 20], "a"), upload(photos[(i + 7) % 20], "b")] for i in range(count)]
    verify_over_http(live_server, files[0])  # warm: first-call allocations are not growth
    before = rss_mib()
    with ThreadPoolExecutor(8) as pool:
        latencies = np.array([t for t, _ in pool.map(lambda f: verify_over_http(live_server, f),
                                                     files)])  # fmt: skip
    after = rss_mib()
    p50, p95, p99 = np.percentile(latencies * 1000, [50, 95, 99])
    report = (f"{count} verify requests, 8 at a time: p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
              f"p99 {p99:.0f} ms; RSS {before:.0f} -> {after:.0f} MiB")  # fmt: skip
    print(report)
    record_property("load", report)
    assert after - before < 200, report


def test_serve_warns_when_it_listens_beyond_this_machine(serve_folder, monkeypatch, capsys):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    assert commands.main(["serve", str(serve_folder), "--port", "8123"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert commands.main(["serve", str(serve_folder), "--host", "0.0.0.0"]) == 0
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    assert [kw["host"] for _, kw in calls] == ["127.0.0.1", "0.0.0.0"]
    assert calls[0][1]["port"] == 8123 and calls[0][1]["limit_concurrency"] == 32
    assert commands.main(["serve", str(serve_folder / "missing")]) == 2
    assert "error" in capsys.readouterr().err
