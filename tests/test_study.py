"""Studies: a real ``train.py -m`` sweep (one folder per job, a misspelt swept value in one line,
the joblib launcher's share of the cores) and ``facerec compare`` on its runs, checked against
statistics recomputed here from the runs' raw per-pair distances."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from facerec.cli.commands import main as facerec
from facerec.cli.train import threads_per_job

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    return {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}


def tiny_args(lfw_root: Path, pairs: Path, out: Path) -> list[str]:
    """Three steps of batch 8 on the LFW people with >= 20 images, 20 pairs verified once."""
    return ["debug=smoke", f"data.root={lfw_root}", f"paths.output_dir={out}",
            "trainer.device=cpu", "trainer.max_steps=3", "data.batch_size=8",
            f"data.val.lfw_devtest.pairs_file={pairs}", "trainer.eval_batch_size=20"]  # fmt: skip


def train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def sweep(lfw_root, tiny_pairs, tmp_path_factory) -> Path:
    """``-m head=arcface,cosface seed=1,2``: two arms of two seeds, three steps each."""
    out = tmp_path_factory.mktemp("study")
    result = train("-m", "head=arcface,cosface", "seed=1,2", *tiny_args(lfw_root, tiny_pairs, out))
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (out / "multirun").iterdir()
    return folder


def test_sweep_trains_each_job_in_its_own_folder(sweep):
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        (run,) = [p.parent for p in job.rglob("metrics.json")]  # one run per job folder
        config = OmegaConf.load(run / "config.yaml")
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        assert f"seed={config.seed}" in overrides
        assert f"head={config.head._target_.rsplit('.', 1)[-1].lower()}" in overrides
        seen.add((config.head._target_, config.seed))
    assert len(seen) == 4 and (sweep / "multirun.yaml").is_file()


def test_misspelt_sweep_value_is_one_line_before_any_run(lfw_root, tiny_pairs, tmp_path):
    result = train("--multirun", "head=arcface,cosfce", *tiny_args(lfw_root, tiny_pairs, tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("facerec: error: sweep job head=cosfce:")
    assert "Available options in 'head'" in lines[0]
    assert not (tmp_path / "multirun").exists()  # nothing started


def test_a_head_without_a_scale_in_a_demo_sweep_is_one_line_before_any_run(
    lfw_root, tiny_pairs, tmp_path
):
    """experiment=demo sets head.s for every head; Softmax has none: the sweep stops at once."""
    args = tiny_args(lfw_root, tiny_pairs, tmp_path)
    result = train("--multirun", "head=arcface,softmax", "++head.s=32", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0] == ("facerec: error: sweep job head=softmax: head.s: Softmax takes no s"
                        " (it takes: nothing); remove it with ~head.s (in a sweep: the heads"
                        " without a scale in a sweep of their own, docs/studies.md)")  # fmt: skip
    assert not (tmp_path / "multirun").exists()


def test_a_launchers_start_method_gives_way_to_the_platforms(monkeypatch):
    """Inside a loky worker the default start method is "loky", which DataLoader workers cannot
    be started with; the platform's default is put back, another stdlib one is left alone."""
    import multiprocessing

    from facerec.cli.train import platform_start_method

    chosen = []
    monkeypatch.setattr(multiprocessing, "set_start_method", lambda m, force: chosen.append(m))
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none: "loky")
    platform_start_method()
    assert chosen == [multiprocessing.get_all_start_methods()[0]]
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none: "spawn")
    platform_start_method()
    assert len(chosen) == 1


def test_threads_per_job_share_the_cores():
    assert threads_per_job(2, 16) == 8
    assert threads_per_job(3, 16) == 5
    assert threads_per_job(-1, 16) == 1  # joblib's -1: every core runs a job
    assert threads_per_job(-2, 5) == 1  # all cores but one: 4 jobs on 5 cores
    assert threads_per_job(4, 2) == 1
    assert threads_per_job(None, 8) is None  # the basic launcher: one job at a time


def has_joblib_launcher() -> bool:
    try:
        return importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None
    except ModuleNotFoundError:  # no Hydra plugin at all: no hydra_plugins package
        return False


@pytest.mark.slow  # two parallel training jobs (~20 s): make test-all
@pytest.mark.skipif(
    not has_joblib_launcher(),
    reason="hydra-joblib-launcher not installed (pip install 'facerec[study]')",
)
def test_joblib_launcher_runs_jobs_in_parallel_on_their_share(lfw_root, tiny_pairs, tmp_path):
    args = tiny_args(lfw_root, tiny_pairs, tmp_path)
    # data.num_workers=1: DataLoader workers inside loky's job processes (they could not start)
    result = train("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                   "head=arcface,cosface", "seed=1", *args, "data.num_workers=1")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {p.parent for p in tmp_path.rglob("metrics.json")}
    assert len(runs) == 2  # started in the same second, yet two folders
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert result.stderr.count(f": {threads} torch threads of") == 2


# --- facerec compare, against statistics computed here ---------------------------------------


def naive_correct(distances: np.ndarray, issame: np.ndarray) -> np.ndarray:
    """LFW's 10-fold protocol written out: the tiny list is 10 same then 10 different pairs, so
    fold k holds same pair k and different pair k; the threshold of the grid 0:4:0.01 with the
    most right answers on the other folds (the first on ties) judges fold k."""
    folds = np.arange(len(issame)) % 10
    grid = np.arange(0, 4, 0.01)
    correct = np.zeros(len(issame), dtype=bool)
    for k in range(10):
        train, test = folds != k, folds == k
        right = [np.sum((distances[train] < t) == issame[train]) for t in grid]
        threshold = grid[int(np.argmax(right))]
        correct[test] = (distances[test] < threshold) == issame[test]
    return correct


def final_scores(run: Path) -> dict:
    return json.loads(sorted((run / "verification" / "lfw_devtest").glob("*.json"))[-1].read_text())


def arm_runs(sweep: Path) -> dict[str, dict[int, Path]]:
    """head class -> seed -> run folder, read from the saved configs."""
    arms: dict[str, dict[int, Path]] = {}
    for metrics in sweep.rglob("metrics.json"):
        config = OmegaConf.load(metrics.parent / "config.yaml")
        head = config.head._target_.rsplit(".", 1)[-1].lower()
        arms.setdefault(head, {})[int(config.seed)] = metrics.parent
    return arms


def test_compare_matches_statistics_computed_from_the_raw_pairs(sweep, tmp_path):
    out_json, out_md = tmp_path / "study.json", tmp_path / "study.md"
    assert facerec(["compare", str(sweep), "--json", str(out_json), "--md", str(out_md),
                    "--bootstrap", "500", "--seed", "7"]) == 0  # fmt: skip
    report = json.loads(out_json.read_text())
    rows = {row["arm"].split()[0]: row for row in report["sets"]["lfw_devtest"]}
    assert set(rows) == {"head=arcface", "head=cosface"} and rows["head=arcface"]["baseline"]
    correct = {}
    for head, seeds in arm_runs(sweep).items():
        row = rows[f"head={head}"]
        assert row["seeds"] == [1, 2]
        finals = [final_scores(seeds[s]) for s in (1, 2)]
        outcome = [naive_correct(np.array(f["distances"]), np.array(f["issame"], bool))
                   for f in finals]  # fmt: skip
        accuracy = [o.mean() for o in outcome]  # equal folds: the run's 10-fold accuracy
        np.testing.assert_allclose(row["accuracy"]["mean"], np.mean(accuracy), atol=1e-12)
        np.testing.assert_allclose(row["accuracy"]["std"], np.std(accuracy, ddof=1), atol=1e-12)
        tar = [f["summary"]["tar_at_far"] for f in finals]
        np.testing.assert_allclose(row["tar_at_far"]["mean"], np.mean(tar), atol=1e-12)
        correct[head] = outcome
    # The paired bootstrap, naively: the same resampled pairs for both arms and both seeds.
    rng = np.random.default_rng(7)
    n = len(correct["arcface"][0])
    stats = []
    for _ in range(500):
        idx = rng.integers(0, n, n)
        per_seed = [correct["cosface"][s][idx].mean() - correct["arcface"][s][idx].mean()
                    for s in range(2)]  # fmt: skip
        stats.append(np.mean(per_seed))
    diff = rows["head=cosface"]["difference"]
    point = np.mean([correct["cosface"][s].mean() - correct["arcface"][s].mean() for s in range(2)])
    np.testing.assert_allclose(diff["mean"], point, atol=1e-12)
    np.testing.assert_allclose([diff["low"], diff["high"]], np.percentile(stats, [2.5, 97.5]),
                               atol=1e-12)  # fmt: skip
    assert diff["seeds"] == 2
    assert "| head=cosface" in out_md.read_text()
    for figure in ("lfw_devtest_roc.png", "lfw_devtest_accuracy.png"):
        assert (tmp_path / figure).stat().st_size > 1000


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_compare_refuses_what_it_cannot_compare_in_one_line(sweep, tmp_path, capsys):
    assert facerec(["compare", str(sweep), "--baseline", "head=sphereface"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("facerec compare: error: --baseline 'head=sphereface' matches no arm")
    twin = tmp_path / "twin"  # a copy of one run: the same arm and seed twice
    shutil.copytree(next(sweep.rglob("metrics.json")).parent, twin)
    assert facerec(["compare", str(sweep), str(twin)]) == 2
    assert "are the same arm" in one_error_line(capsys)
    assert facerec(["compare", str(tmp_path / "nothing")]) == 2
    assert "no such run or sweep folder" in one_error_line(capsys)
