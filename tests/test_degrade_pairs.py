"""scripts/degrade_pairs.py: degraded copies of a verification set the same pairs file reads,
and the ``extra_val=lfw_light`` option that verifies them during training."""

from __future__ import annotations

import runpy
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerec.data.pairs import read_pairs

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "degrade_pairs.py"
PEOPLE = {"Ann_A": 3, "Bob_B": 2, "Cid_C": 1}  # Ann_A_0003 is in no pair: never copied
PAIRS = "2\nAnn_A\t1\t2\nBob_B\t1\t2\nAnn_A\t1\tCid_C\t1\nBob_B\t2\tCid_C\t1\n"
USED = {"Ann_A/Ann_A_0001.jpg", "Ann_A/Ann_A_0002.jpg", "Bob_B/Bob_B_0001.jpg",
        "Bob_B/Bob_B_0002.jpg", "Cid_C/Cid_C_0001.jpg"}  # fmt: skip


@pytest.fixture(scope="module")
def script():
    return runpy.run_path(str(SCRIPT), run_name="degrade_pairs")


@pytest.fixture
def lfw_like(tmp_path) -> tuple[Path, Path]:
    """A 250x250 image folder in LFW layout (smooth colour, mid-grey) and its pairs file."""
    root = tmp_path / "faces"
    rng = np.random.default_rng(3)
    for person, count in PEOPLE.items():
        (root / person).mkdir(parents=True)
        for i in range(1, count + 1):
            coarse = rng.uniform(60, 200, (6, 6, 3)).astype(np.uint8)
            image = cv2.resize(coarse, (250, 250), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(root / person / f"{person}_{i:04d}.jpg"), image)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(PAIRS)
    return pairs, root


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_each_kind_is_the_pairs_images_in_their_layout_and_degraded_as_documented(
    script, lfw_like, tmp_path
):
    pairs, root = lfw_like
    out = tmp_path / "out"
    kinds = "dark,low_contrast,noise,grey,light,small,rot30"
    assert script["main"]([str(pairs), str(root), str(out), "--kinds", kinds]) == 0
    for kind in kinds.split(","):
        assert files(out / kind) == USED, kind
        assert len(read_pairs(pairs, out / kind)[0]) == 4  # the same pairs file verifies on it
    name = "Ann_A/Ann_A_0001.jpg"
    clean = cv2.imread(str(root / name)).astype(np.float64)
    copy = {k: cv2.imread(str(out / k / name), cv2.IMREAD_UNCHANGED) for k in kinds.split(",")}
    # dark: gamma 2-4 (+ noise of sigma <= 5): between the gamma 4 and gamma 2 images
    for gamma, side in ((4, 1), (2, -1)):
        reference = (255 * (clean / 255) ** gamma).mean()
        assert side * (copy["dark"].mean() - reference) > -2.0
    # low contrast: the spread shrinks to 0.2-0.5 of the clean image's
    assert 0.15 < copy["low_contrast"].std() / clean.std() < 0.55
    # sensor noise: variance a * value + b^2 (a 0.5-2, b 2-6) around the clean image, plus JPEG
    residual = copy["noise"].astype(np.float64) - clean
    assert abs(residual.mean()) < 1.5 and 7.0 < residual.std() < 25.0
    assert copy["grey"].ndim == 2  # one channel
    assert copy["small"].shape[:2] == (1000, 1000)  # shrunk onto the 1000x1000 canvas
    assert copy["rot30"].shape[:2] == (354, 354)  # ceil(hypot(250, 250)): every pixel kept


def test_a_kinds_copy_depends_on_the_seed_kind_and_name_only(script, lfw_like, tmp_path):
    pairs, root = lfw_like
    run = lambda out, *more: script["main"]([str(pairs), str(root), str(tmp_path / out), *more])  # noqa: E731
    assert run("a", "--kinds", "noise") == 0
    assert run("b", "--kinds", "dark,light,noise") == 0
    assert run("c", "--kinds", "noise", "--seed", "1") == 0
    for name in USED:
        a, b, c = ((tmp_path / d / "noise" / name).read_bytes() for d in "abc")
        assert a == b and a != c


def test_tight_without_a_detector_cuts_the_middle_box(script, lfw_like, tmp_path):
    """No face found (here: no detector): the middle 45% (112.5 px of 250), each side moved by
    at most 10% of it."""
    _, root = lfw_like
    counts = script["degrade"](root, ["Ann_A/Ann_A_0001.jpg"], tmp_path, ["tight"], progress=False)
    assert counts == {"written": 1, "unreadable": 0, "nominal": 0}
    h, w = cv2.imread(str(tmp_path / "tight" / "Ann_A" / "Ann_A_0001.jpg")).shape[:2]
    assert 112.5 * 0.8 - 1 <= h <= 112.5 * 1.2 + 1 and 112.5 * 0.8 - 1 <= w <= 112.5 * 1.2 + 1


def test_an_unreadable_image_is_one_line_counted_and_the_exit_status_says_so(
    script, lfw_like, tmp_path, capsys
):
    pairs, root = lfw_like
    (root / "Bob_B" / "Bob_B_0002.jpg").write_bytes(b"not a jpeg")
    assert script["main"]([str(pairs), str(root), str(tmp_path / "out"), "--kinds", "grey"]) == 1
    err = capsys.readouterr()
    lines = [line for line in err.err.splitlines() if "unreadable, left out" in line]
    assert len(lines) == 1 and "Bob_B_0002.jpg" in lines[0]
    assert "4 written, 1 unreadable" in err.out
    assert files(tmp_path / "out" / "grey") == USED - {"Bob_B/Bob_B_0002.jpg"}


@pytest.mark.parametrize(
    ("out", "kinds", "message"),
    [("faces/sub", "grey", "must be outside the image root"),
     ("out", "grey,blur", "choose from"),
     ("out", "", "choose from")],
)  # fmt: skip
def test_bad_arguments_are_one_line_and_nothing_is_written(
    script, lfw_like, tmp_path, capsys, out, kinds, message
):
    pairs, root = lfw_like
    before = files(tmp_path)
    assert script["main"]([str(pairs), str(root), str(tmp_path / out), "--kinds", kinds]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert files(tmp_path) == before


def test_extra_val_lfw_light_adds_each_light_kind_as_its_own_set(script, compose_train):
    """Each kind the script makes by default, plus the mix, verified on pairsDevTest from
    ``paths.degraded_dir/<kind>``, beside the clean set; one can be dropped."""
    from hydra.utils import instantiate

    from facerec.data import PairsSet

    cfg = compose_train("experiment=demo", "extra_val=lfw_light", "paths.degraded_dir=/tmp/d",
                        "paths.lfw_root=/lfw", "~data.val.lfw_grey")  # fmt: skip
    kinds = [*script["LIGHT"], "light"]
    assert list(cfg.data.val) == ["lfw_devtest", *(f"lfw_{k}" for k in kinds if k != "grey")]
    for kind in kinds:
        if kind == "grey":
            continue
        pairs_set = instantiate(cfg.data.val[f"lfw_{kind}"])
        assert isinstance(pairs_set, PairsSet)
        assert pairs_set.image_root == Path(f"/tmp/d/{kind}")
        assert pairs_set.pairs_file == Path("/lfw/pairsDevTest.txt")
    assert cfg.data.align is not None  # the demo aligns: the copies are aligned with it
    assert "lfw_dark" not in compose_train("experiment=demo").data.val
