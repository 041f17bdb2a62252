"""``facerec serve --gallery``: enrol people from uploaded photos, identify a photo against
them (the API; the page's own run is in test_serve_page.py), on the tiny model of
tests/serving.py and real LFW photos."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (pip install facerec[serve])")
from fastapi.testclient import TestClient
from serving import ENROL, IMAGES, QUERY, app_for

from facerec.inference import FaceEmbedder
from facerec.inference.gallery import read_gallery


def photos(lfw_root, names, field="photos") -> list:
    return [(field, (n.split("/")[-1], (lfw_root / IMAGES / n).read_bytes(), "image/jpeg"))
            for n in names]  # fmt: skip


@pytest.fixture
def gallery_client(serve_folder, tmp_path) -> TestClient:
    """A server whose gallery folder is empty (the first enrolment writes it)."""
    return TestClient(app_for(serve_folder, gallery=tmp_path / "people"))


def enrol_everyone(client, lfw_root) -> list[dict]:
    return [client.post("/api/enroll", data={"name": name}, files=photos(lfw_root, files)).json()
            for name, files in ENROL.items()]  # fmt: skip


def test_enrol_then_identify_names_the_person_at_rank_1(gallery_client, lfw_root, serve_folder,
                                                        tmp_path):  # fmt: skip
    empty = gallery_client.post("/api/identify", files=photos(lfw_root, [QUERY], "photo"))
    assert empty.status_code == 409 and "is empty: enrol someone first" in empty.json()["error"]
    done = enrol_everyone(gallery_client, lfw_root)
    assert [d["images"] for d in done] == [2, 2] and done[-1]["gallery"]["identities"] == 2
    assert all(p["chosen"] == 0 and len(p["faces"]) == 1 for d in done for p in d["photos"])
    gallery = read_gallery(tmp_path / "people")  # written, and readable by the gallery tools
    assert gallery.names == sorted(ENROL) and len(gallery.embeddings) == 4
    assert all(r.file.startswith("upload:") for rs in gallery.images for r in rs)

    found = gallery_client.post("/api/identify", files=photos(lfw_root, [QUERY], "photo")).json()
    top = found["answers"][0]
    assert top[0]["name"] == "Serena_Williams" and [c["name"] for c in top] == sorted(
        ENROL, key=lambda n: n != "Serena_Williams"
    )
    model = FaceEmbedder.load(serve_folder, "cpu")  # the same numbers, computed here
    query = model.embed([lfw_root / IMAGES / QUERY])[0]
    for candidate in top:
        emb = model.embed([lfw_root / IMAGES / f for f in ENROL[candidate["name"]]]).sum(0)
        assert candidate["similarity"] == pytest.approx(query @ emb / np.linalg.norm(emb), abs=1e-4)
    assert "the model's verification threshold" in found["threshold_source"]
    assert found["identities"] == ["Serena_Williams" if top[0]["similarity"] >= found["threshold"]
                                   else "unknown"]  # fmt: skip
    for threshold, identity in ((-1.0, "Serena_Williams"), (1.0, "unknown")):
        answer = gallery_client.post("/api/identify", files=photos(lfw_root, [QUERY], "photo"),
                                     data={"threshold": str(threshold)}).json()  # fmt: skip
        assert answer["identities"] == [identity] and answer["threshold_source"] == "given"


def test_enrolment_replaces_a_photo_enrolled_again_and_a_restart_reads_it(
    gallery_client, lfw_root, serve_folder, tmp_path
):
    enrol_everyone(gallery_client, lfw_root)
    first = photos(lfw_root, ENROL["Serena_Williams"][:1])
    again = gallery_client.post("/api/enroll", data={"name": "Serena_Williams"}, files=first)
    again = again.json()
    assert again["images"] == 2
    restarted = TestClient(app_for(serve_folder, gallery=tmp_path / "people"))
    summary = restarted.get("/api/model").json()["gallery"]
    assert summary["identities"] == 2 and summary["images"] == 4
    assert summary["names"] == sorted(ENROL) and summary["calibrated"] is False


@pytest.mark.parametrize(
    ("name", "files", "status", "says"),
    [
        ("", 1, 422, "name"),
        ("a/b", 1, 422, "no / or \\"),
        ("Ann", 0, 422, "photos: Field required"),
        ("Ann", 21, 422, "at most 20"),
        ("Ann", -1, 415, "notes.jpg: not an image"),
    ],
    ids=["empty-name", "slash-in-name", "no-photo", "21-photos", "text-named-jpg"],
)
def test_a_bad_enrolment_changes_nothing(gallery_client, lfw_root, tmp_path, name, files,
                                         status, says):  # fmt: skip
    one = photos(lfw_root, ENROL["Serena_Williams"][:1])
    sent = one * files if files >= 0 else [*one, ("photos", ("notes.jpg", b"text", "image/jpeg"))]
    response = gallery_client.post("/api/enroll", data={"name": name}, files=sent)
    assert response.status_code == status and says in response.json()["error"]
    assert not (tmp_path / "people").exists()


def test_without_a_gallery_identify_and_enrol_say_so(serve_folder, lfw_root):
    client = TestClient(app_for(serve_folder))
    assert client.get("/api/model").json()["gallery"] is None
    for path, files in (("/api/identify", photos(lfw_root, [QUERY], "photo")),
                        ("/api/enroll", photos(lfw_root, [QUERY]))):  # fmt: skip
        response = client.post(path, files=files, data={"name": "Ann"})
        assert response.status_code == 404 and "--gallery" in response.json()["error"]


def test_another_models_gallery_is_refused_at_start(serve_folder, tmp_path, lfw_root):
    client = TestClient(app_for(serve_folder, gallery=tmp_path / "people"))
    enrol_everyone(client, lfw_root)
    index = tmp_path / "people" / "gallery.json"
    record = json.loads(index.read_text())
    record["model"]["fingerprint"] = "0" * 16
    index.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="built by another model"):
        app_for(serve_folder, gallery=tmp_path / "people")


def test_two_enrolments_at_once_both_land(gallery_client, lfw_root, tmp_path):
    def enrol(item):
        name, files = item
        return gallery_client.post(
            "/api/enroll", data={"name": name}, files=photos(lfw_root, files)
        )

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(enrol, ENROL.items()))
    assert [a.status_code for a in answers] == [200, 200]
    gallery = read_gallery(tmp_path / "people")
    assert gallery.names == sorted(ENROL) and len(gallery.embeddings) == 4
