"""``--sampling release``: the release's data order (200 crops per image drawn once, in order,
epochs repeating, RD on their centre), its DDP shares, and resume in the middle of an epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aprrd_cli.data.sampler import RELEASE_CROPS, ReleaseSampler, augment, release_crops
from aprrd_cli.data.store import open_train_store
from aprrd_cli.errors import AprrdError
from aprrd_cli.models.checkpoint import load_model
from tests.test_data_sampler import make_store
from tests.test_train_cli import TINY, prep  # noqa: F401  (the prepared store fixture)


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {
        "a": rng.integers(0, 256, (70, 90, 3), dtype=np.uint8),
        "b": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "c": rng.integers(0, 65536, (80, 72, 3), dtype=np.uint16),
    }
    return open_train_store(make_store(tmp_path / "prep", arrays))


def cut(store, image: int, top: int, left: int, side: int, k: int) -> np.ndarray:
    """The sample as the release makes it, written out: crop, flip/rotate, channels first, /max."""
    img = np.asarray(store.images[image])
    scale = 255.0 if img.dtype == np.uint8 else 65535.0
    return (augment(img[top : top + side, left : left + side], k).transpose(2, 0, 1) / scale).astype(np.float32)


def test_which_image_and_crop_each_sample_of_a_step_comes_from(store):
    """Batches of consecutive crops: image 0's 200 crops in order, then image 1's, ...; a batch of
    8 holds crops of one image (200 = 25 batches), and every epoch repeats the same crops."""
    s = ReleaseSampler(store, 32, 8, seed=5)
    assert s.epoch_samples == 3 * RELEASE_CROPS
    crops = [release_crops(5, i, h, w, 32) for i, (h, w) in enumerate(s.sizes)]
    for step in (0, 1, 24, 25, 26, 74):
        for index in range(8):
            n = step * 8 + index
            image, j = divmod(n, RELEASE_CROPS)
            top, left, k = crops[image][j]
            assert s.where(step, index) == (image, top, left, k)
            np.testing.assert_array_equal(s.sample(step, index), cut(store, image, top, left, 32, k))
    assert {s.where(24, i)[0] for i in range(8)} == {0} and {s.where(25, i)[0] for i in range(8)} == {1}
    epoch = s.epoch_samples // 8  # 75 steps
    for step in (0, 30, 74):
        assert torch.equal(s.batch(step + epoch), s.batch(step))  # the next epoch: the same batches
    assert not torch.equal(s.batch(0), s.batch(1))


def test_crops_are_drawn_once_per_run_from_the_seed_in_the_releases_ranges(store):
    s, again, other = (ReleaseSampler(store, 32, 8, seed=seed) for seed in (5, 5, 6))
    assert all(np.array_equal(a, b) for a, b in zip(s.crops, again.crops, strict=True))
    assert not np.array_equal(s.crops[0], other.crops[0])
    for (h, w), crops in zip(s.sizes, s.crops, strict=True):
        tops, lefts, ks = crops.T
        assert crops.shape == (RELEASE_CROPS, 3)
        assert 0 <= tops.min() and tops.max() < h - 32  # a corner in [0, side - 256) at full scale
        assert 0 <= lefts.min() and lefts.max() < w - 32
        assert set(ks.tolist()) <= set(range(8)) and len(set(ks.tolist())) > 4


def test_rd_takes_the_centre_of_the_same_crops(store):
    """RD's patch is the centre of the crop APR would see (the release's 128 of 256)."""
    apr = ReleaseSampler(store, 32, 8, seed=5)
    rd = ReleaseSampler(store, 16, 8, seed=5, crop_size=32)
    for step, index in ((0, 0), (3, 5), (40, 7)):
        image, top, left, k = apr.where(step, index)
        assert rd.where(step, index) == (image, top + 8, left + 8, k)
        np.testing.assert_array_equal(rd.sample(step, index), apr.sample(step, index)[:, 8:24, 8:24])
    assert rd.batch(0).shape == (8, 3, 16, 16)


def test_ddp_ranks_take_their_slice_of_each_global_batch(store):
    whole = ReleaseSampler(store, 32, 8, seed=5)
    ranks = [ReleaseSampler(store, 32, 8, seed=5, rank=r, world_size=2) for r in range(2)]
    for step in (0, 26):
        assert torch.equal(torch.cat([r.batch(step) for r in ranks]), whole.batch(step))


def test_a_crop_larger_than_an_image_or_off_centre_is_refused(store):
    with pytest.raises(AprrdError, match="larger than the smallest"):
        ReleaseSampler(store, 32, 8, seed=0, crop_size=96)
    with pytest.raises(AprrdError, match="cannot centre"):
        ReleaseSampler(store, 32, 8, seed=0, crop_size=33)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path).model.state_dict()


@pytest.mark.parametrize("command", ["train-apr", "distill"])
def test_release_order_is_recorded_and_resumes_bit_for_bit_mid_epoch(cli, prep, tmp_path, command):  # noqa: F811
    """Stopped after 2 of 4 iterations (an epoch here is 300), resumed with --resume alone: the
    same weights as the uninterrupted run; config.json records the order."""
    extra = ()
    if command == "distill":
        teacher = tmp_path / "apr"
        assert cli("train-apr", "--data", prep, "--run-dir", teacher, *TINY)[0] == 0
        extra = ("--teacher", teacher / "teacher.pth")
    opts = (*TINY, "--iters", "4", "--sampling", "release", *extra)
    full, part = tmp_path / "full", tmp_path / "part"
    code, _, err = cli(command, "--data", prep, "--run-dir", full, *opts)
    assert code == 0, err
    assert json.loads((full / "config.json").read_text())["config"]["sampling"] == "release"
    assert cli(command, "--data", prep, "--run-dir", part, *opts, "--stop-at", "2")[0] == 0
    code, _, err = cli(command, "--data", prep, "--run-dir", part, "--resume", "--device", "cpu")
    assert code == 0, err
    out = "teacher.pth" if command == "train-apr" else "student.pth"
    a, b = weights(full / out), weights(part / out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the default order trains on other crops: the option reaches the sampler
    code, _, err = cli(command, "--data", prep, "--run-dir", tmp_path / "random", *TINY, "--iters", "4", *extra)
    assert code == 0, err
    c = weights(tmp_path / "random" / out)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_with_another_order_is_refused(cli, prep, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    assert cli("train-apr", "--data", prep, "--run-dir", run, *TINY, "--sampling", "release", "--stop-at", "1")[0] == 0
    code, _, err = cli("train-apr", "--data", prep, "--run-dir", run, "--resume", "--sampling", "random")
    assert code != 0 and "--sampling release -> random" in " ".join(err.split())


def test_an_unknown_order_is_a_one_line_error(cli, prep, tmp_path):  # noqa: F811
    code, _, err = cli("train-apr", "--data", prep, "--run-dir", tmp_path / "run", *TINY, "--sampling", "shuffled")
    assert code == 2 and "--sampling must be random or release" in " ".join(err.split()) and "Traceback" not in err
