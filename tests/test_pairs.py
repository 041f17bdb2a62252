"""facerec.data.pairs on tiny synthetic files, and on the real LFW files when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from facerec.data.pairs import image_path, read_pairs, read_people, read_people_folds
from facerec.eval import make_folds

LFW_ROOT = Path(
    os.environ.get(
        "FACEREC_LFW_ROOT",
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw",
    )
)
needs_lfw = pytest.mark.skipif(
    not (LFW_ROOT / "pairs.txt").is_file(),
    reason=f"real LFW not found at {LFW_ROOT} (set FACEREC_LFW_ROOT to its folder)",
)


@pytest.fixture
def image_root(tmp_path):
    """A fake LFW tree: Alice 1-3, Bob 1-2, Carol 1 (empty files: only existence is checked)."""
    root = tmp_path / "images"
    for name, n in (("Alice", 3), ("Bob", 2), ("Carol", 1)):
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (root / name / f"{name}_{i:04d}.jpg").touch()
    return root


def write(tmp_path, text, name="pairs.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------
# read_pairs


@pytest.mark.parametrize("header", ["", "2\n", "1 2\n", "1\t2\n"])
def test_read_pairs_header_variants_tabs_spaces_and_order(tmp_path, image_root, header):
    body = "Alice\t1\t2\nBob 1  2\n\nAlice\t3\tCarol\t1\nBob 2 Alice 1\n"
    paths, issame = read_pairs(write(tmp_path, header + body), image_root)
    assert issame.dtype == bool and issame.tolist() == [True, True, False, False]
    assert paths == [
        (image_root / "Alice" / "Alice_0001.jpg", image_root / "Alice" / "Alice_0002.jpg"),
        (image_root / "Bob" / "Bob_0001.jpg", image_root / "Bob" / "Bob_0002.jpg"),
        (image_root / "Alice" / "Alice_0003.jpg", image_root / "Carol" / "Carol_0001.jpg"),
        (image_root / "Bob" / "Bob_0002.jpg", image_root / "Alice" / "Alice_0001.jpg"),
    ]


def test_image_path_and_ext(tmp_path, image_root):
    assert image_path("/x", "Bob", 12, ".png") == Path("/x/Bob/Bob_0012.png")
    (image_root / "Bob" / "Bob_0001.png").touch()
    (image_root / "Bob" / "Bob_0002.png").touch()
    paths, _ = read_pairs(write(tmp_path, "Bob 1 2\n"), image_root, ext=".png")
    assert paths[0][1].name == "Bob_0002.png"


def test_read_pairs_header_count_mismatch(tmp_path, image_root):
    with pytest.raises(ValueError, match=r"promises 4 pairs but the file has 2"):
        read_pairs(write(tmp_path, "1 2\nAlice 1 2\nBob 2 Alice 1\n"), image_root)


@pytest.mark.parametrize(
    "bad",
    ["Alice 1", "Alice x 2", "Alice 0 2", "Alice 1 2 3 4 5", "Alice 1 Bob", "Alice 1 Bob -2", "7"],
)
def test_read_pairs_malformed_line_names_file_line_and_text(tmp_path, image_root, bad):
    path = write(tmp_path, f"2\nAlice 1 2\n{bad}\nBob 2 Alice 1\n")
    with pytest.raises(ValueError, match="malformed pair line") as err:
        read_pairs(path, image_root)
    assert f"{path}:3" in str(err.value) and repr(bad) in str(err.value)


def test_read_pairs_four_fields_same_name(tmp_path, image_root):
    with pytest.raises(ValueError, match=r"pairs.txt:1: .*names 'Alice' twice"):
        read_pairs(write(tmp_path, "Alice 1 Alice 2\n"), image_root)


def test_read_pairs_bad_header(tmp_path, image_root):
    with pytest.raises(ValueError, match=r"pairs.txt:1: expected a header"):
        read_pairs(write(tmp_path, "1 2 3\nAlice 1 2\n"), image_root)


def test_read_pairs_missing_images_reports_first_few_and_count(tmp_path, image_root):
    lines = ["Alice 1 2"] + [f"Dave {i} {i + 1}" for i in range(1, 8)] + ["Bob 1 Erin 1"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(FileNotFoundError) as err:
        read_pairs(path, image_root)
    msg = str(err.value)
    assert str(path) in msg and "9 image(s)" in msg  # Dave_0001..0008 and Erin_0001
    assert f"line 2: {image_root / 'Dave' / 'Dave_0001.jpg'}" in msg
    assert "... and 4 more" in msg


def test_read_pairs_empty_and_header_only(tmp_path, image_root):
    with pytest.raises(ValueError, match="contains no pairs"):
        read_pairs(write(tmp_path, ""), image_root)
    with pytest.raises(ValueError, match="contains no pairs"):
        read_pairs(write(tmp_path, "\n  \n"), image_root)
    with pytest.raises(ValueError, match="contains no pairs"):
        read_pairs(write(tmp_path, "10 300\n"), image_root)


def test_read_pairs_missing_file_or_root(tmp_path, image_root):
    with pytest.raises(FileNotFoundError, match="pairs file not found"):
        read_pairs(tmp_path / "nope.txt", image_root)
    with pytest.raises(FileNotFoundError, match="image root not found"):
        read_pairs(write(tmp_path, "Alice 1 2\n"), tmp_path / "no_images")


# ----------------------------------------------------------------------------------------------
# read_people


def test_read_people_single_block(tmp_path):
    path = write(tmp_path, "3\nAlice\t3\nBob 2\nCarol\t1\n", "people.txt")
    assert read_people(path) == {"Alice": 3, "Bob": 2, "Carol": 1}
    assert list(read_people(path)) == ["Alice", "Bob", "Carol"]


def test_read_people_multi_fold(tmp_path):
    path = write(tmp_path, "2\n2\nAlice 3\nBob 2\n1\nCarol 1\n", "people.txt")
    assert read_people_folds(path) == [{"Alice": 3, "Bob": 2}, {"Carol": 1}]
    assert read_people(path) == {"Alice": 3, "Bob": 2, "Carol": 1}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is empty"),
        ("x\nAlice 1\n", r"people.txt:1: expected a count, got 'x'"),
        ("2\nAlice 1\nBob\n", r"people.txt:3: malformed people line 'Bob'"),
        ("2\nAlice 1\nBob 0\n", r"people.txt:3: malformed people line 'Bob 0'"),
        ("3\nAlice 1\nBob 2\n", "ended early: a count line promised 3 people, found 2"),
        ("1\nAlice 1\nBob 2\n", r"people.txt:3: unexpected line 'Bob 2'"),
        ("2\nAlice 1\nAlice 2\n", r"people.txt:3: 'Alice' is already listed on line 2"),
        ("3\n1\nAlice 1\n1\nBob 1\n", "promises 3 folds, the file has 2"),
    ],
)
def test_read_people_errors(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        read_people(write(tmp_path, text, "people.txt"))


def test_read_people_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="people file not found"):
        read_people(tmp_path / "people.txt")


# ----------------------------------------------------------------------------------------------
# the real LFW files


@needs_lfw
def test_real_pairs_dev_test():
    paths, issame = read_pairs(LFW_ROOT / "pairsDevTest.txt", LFW_ROOT / "lfw-deepfunneled")
    assert len(paths) == 1000 and issame.sum() == 500
    assert issame[:500].all() and not issame[500:].any()
    folds = make_folds(issame)
    assert np.array_equal(np.bincount(folds[issame]), [50] * 10)
    assert np.array_equal(np.bincount(folds[~issame]), [50] * 10)


@needs_lfw
def test_real_pairs_txt_fold_structure():
    paths, issame = read_pairs(LFW_ROOT / "pairs.txt", LFW_ROOT / "lfw-deepfunneled")
    assert len(paths) == 6000 and issame.sum() == 3000
    assert all(p.is_file() for p in paths[0])
    for k in range(10):
        block = issame[600 * k : 600 * (k + 1)]
        assert block[:300].all() and not block[300:].any()
    assert np.array_equal(make_folds(issame), np.repeat(np.arange(10), 600))


@needs_lfw
def test_real_people_dev_train_is_disjoint_from_dev_test_pairs():
    people = read_people(LFW_ROOT / "peopleDevTrain.txt")
    assert len(people) == 4038 and sum(people.values()) == 9525
    assert sum(n >= 5 for n in people.values()) == 298
    paths, _ = read_pairs(LFW_ROOT / "pairsDevTest.txt", LFW_ROOT / "lfw-deepfunneled")
    names = {p.parent.name for pair in paths for p in pair}
    assert len(names) == 963 and not names & set(people)


@needs_lfw
def test_real_people_txt_folds():
    folds = read_people_folds(LFW_ROOT / "people.txt")
    assert len(folds) == 10 and sum(map(len, folds)) == 5749
    assert len(read_people(LFW_ROOT / "people.txt")) == 5749
