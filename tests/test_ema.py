"""``trainer.ema``: the weight average against a float64 loop written from its formula, what the
checkpoint holds, exact resume, refused values, and the tools reading the averaged model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_train
from test_reliability import args, faces, pairs_file, with_val
from torch import nn

from facerec.files import checkpoint
from facerec.inference.embedder import FaceEmbedder
from facerec.training.ema import WeightEma
from facerec.training.run import run
from facerec.training.validate import check_config
from facerec.training.verifier import Verifier

EMA = ["trainer.ema.enabled=true", "trainer.ema.decay=0.9", "trainer.ema.warmup_power=0.75"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine a tiny run is 10x faster than with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_average(states: list[dict], decay: float, warmup: bool, power: float,
                      every: int) -> dict:  # fmt: skip
    """The average after training states 1..n (one per optimizer step), in float64, from the
    documented formula: update k (every ``every`` steps) has decay 0 at k = 1, else ``decay``
    (capped warm-up ``1 - k^-power``); integer buffers are copied."""
    average: dict = {}
    for step, state in enumerate(states, start=1):
        if step % every:
            continue
        k = step // every
        d = 0.0 if k == 1 else (min(decay, 1.0 - k**-power) if warmup else decay)
        for name, value in state.items():
            if not value.is_floating_point():
                average[name] = value.clone()
            else:
                old = average.get(name, torch.zeros_like(value, dtype=torch.float64))
                average[name] = d * old + (1.0 - d) * value.double()
    return average


def assert_close(average: dict, saved: dict) -> None:
    assert average.keys() == saved.keys()
    for name, value in average.items():
        torch.testing.assert_close(saved[name].to(value.dtype), value, rtol=1e-5, atol=1e-6,
                                   msg=name)  # fmt: skip


def snapshot(model: nn.Module) -> dict:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@pytest.mark.parametrize(("warmup", "every"), [(True, 1), (False, 1), (True, 3)])
def test_the_update_follows_the_formula_with_warmup_and_every(warmup, every):
    """12 steps of a Linear + BatchNorm (buffers move, ``num_batches_tracked`` counts): the
    decay 0.6 is reached by the warm-up after 4 updates, so both regimes are crossed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ema = WeightEma(model, decay=0.6, warmup=warmup, warmup_power=0.75, every=every)
    states = []
    for step in range(1, 13):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
            model(torch.randn(8, 4) * step)  # train mode: BatchNorm's running stats move
        states.append(snapshot(model))
        ema.update(model, step)
    average = reference_average(states, 0.6, warmup, 0.75, every)
    assert_close(average, ema.model(model).state_dict())
    assert not torch.equal(ema.model(model)[0].weight, model[0].weight)  # an average, not a copy


def test_checkpoint_model_is_the_average_train_model_the_raw_weights_and_tools_load_it(
    tmp_path, monkeypatch
):
    """A tiny run with verification: the checkpoint's ``model`` (and ``best.pt``'s, and what
    verification embedded with) is the average of the raw weights of every step, computed
    here from the recorded states; ``train_model`` the last raw weights; FaceEmbedder loads
    the average."""
    states: list[dict] = []
    update, evaluate = WeightEma.update, Verifier.evaluate

    def record_update(self, model, step):
        states.append(snapshot(model))
        update(self, model, step)

    verified: list[dict] = []

    def record_evaluate(self, model, device, **kwargs):
        verified.append(snapshot(model))
        return evaluate(self, model, device, **kwargs)

    monkeypatch.setattr(WeightEma, "update", record_update)
    monkeypatch.setattr(Verifier, "evaluate", record_evaluate)
    data = faces(tmp_path / "d", people=3)
    val = with_val(data, pairs_file(tmp_path / "pairs.txt", 10, 10))
    metrics = run(compose_train(*args(data, tmp_path / "o", *EMA, "trainer.max_steps=5"), *val))
    folder = Path(metrics["run_dir"]) / "checkpoints"
    last, best = checkpoint.load(folder / "last.pt"), checkpoint.load(folder / "best.pt")
    assert len(states) == 5
    average = reference_average(states, 0.9, True, 0.75, 1)
    assert_close(average, last["model"])
    assert_close(average, best["model"])
    assert_close(average, verified[-1])
    for name, value in states[-1].items():
        assert torch.equal(last["train_model"][name], value), name
    assert not torch.equal(last["model"]["embedding.fc.weight"],
                           last["train_model"]["embedding.fc.weight"])  # fmt: skip
    embedder = FaceEmbedder.load(folder / "last.pt", "cpu")
    for name, value in embedder.model.state_dict().items():
        assert torch.equal(value, last["model"][name]), name
    image = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    vector = embedder.embed([image])
    assert vector.shape == (1, 32) and np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)


def test_a_run_split_at_a_checkpoint_resumes_the_raw_and_averaged_weights_bit_identically(
    tmp_path,
):
    """4 steps straight == 2 steps, stop, ``trainer.resume=auto`` for 2 more (deterministic,
    CPU): the averaged and the raw weights, head and optimizer are equal bit for bit. At the
    split the average (of steps 1 and 2) differs from the raw weights, so loading either entry
    into the other's place would show."""
    data = faces(tmp_path / "d", people=3)
    straight = run(compose_train(*args(data, tmp_path / "a", *EMA, "trainer.max_steps=4")))
    first = run(compose_train(*args(data, tmp_path / "b", *EMA, "trainer.max_steps=2")))
    split = checkpoint.load(Path(first["run_dir"]) / "checkpoints" / "last.pt")
    assert not torch.equal(split["model"]["embedding.fc.weight"],
                           split["train_model"]["embedding.fc.weight"])  # fmt: skip
    resumed = run(compose_train(*args(data, tmp_path / "b", *EMA, "trainer.resume=auto")))
    assert resumed["run_dir"] == first["run_dir"]
    a, b = (checkpoint.load(Path(m["run_dir"]) / "checkpoints" / "last.pt")
            for m in (straight, resumed))  # fmt: skip
    assert a["step"] == b["step"] == 4
    for entry in ("model", "train_model", "head"):
        for name, value in a[entry].items():
            assert torch.equal(value, b[entry][name]), f"{entry}.{name}"
    for moment, value in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(),
                             strict=True):  # fmt: skip
        assert torch.equal(moment["momentum_buffer"], value["momentum_buffer"])


def test_resuming_with_ema_toggled_or_another_decay_is_refused(tmp_path):
    data = faces(tmp_path / "d", people=3)
    run(compose_train(*args(data, tmp_path / "o", "trainer.max_steps=1")))
    for override, named in [
        ("trainer.ema.enabled=true", "trainer.ema.enabled: False there, True here"),
        ("trainer.ema.decay=0.99", "trainer.ema.decay: 0.999 there, 0.99 here"),
    ]:
        with pytest.raises(ValueError, match="another run") as refused:
            run(compose_train(*args(data, tmp_path / "o", "trainer.resume=auto", override)))
        assert named in str(refused.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.ema.decay=1.0", "trainer.ema.decay=1.0 must be in [0, 1)"),
        ("trainer.ema.decay=-0.1", "trainer.ema.decay=-0.1 must be in [0, 1)"),
        ("trainer.ema.every=0", "trainer.ema.every=0 must be >= 1"),
        ("trainer.ema.every=1.5", "trainer.ema.every=1.5 must be int"),
        ("trainer.ema.warmup_power=0", "trainer.ema.warmup_power=0 must be > 0"),
        ("trainer.ema.enabled=maybe", "trainer.ema.enabled='maybe' must be bool"),
    ],
)
def test_bad_ema_values_are_refused_naming_the_key(override, message):
    with pytest.raises(ValueError) as refused:
        check_config(compose_train("data=folder", "data.root=/nowhere", override),
                     torch.device("cpu"))  # fmt: skip
    assert str(refused.value) == message
