"""The prepared store's reader and the training sampler: exact crops, determinism, DDP shares, workers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from aprrd_cli.data.sampler import PatchSampler, augment
from aprrd_cli.data.store import open_eval_set, open_train_store, save_npy, write_index
from aprrd_cli.errors import AprrdError


def make_store(prep: Path, arrays: dict[str, np.ndarray]) -> Path:
    entries = []
    for name, arr in arrays.items():
        save_npy(prep / "train" / f"{name}.npy", arr)
        entries.append({"name": name, "file": f"train/{name}.npy", "shape": list(arr.shape), "dtype": arr.dtype.name})
    write_index(prep, {"train": entries, "eval": {}})
    return prep


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "a": rng.integers(0, 256, (40, 56, 3), dtype=np.uint8),
        "b": rng.integers(0, 256, (33, 35, 3), dtype=np.uint8),
        "c": rng.integers(0, 65536, (48, 40, 3), dtype=np.uint16),
    }


@pytest.fixture
def store(tmp_path, arrays):
    return open_train_store(make_store(tmp_path / "prep", arrays))


def test_store_opens_memmaps(store, arrays):
    assert store.names == ["a", "b", "c"] and len(store) == 3
    for img, name in zip(store.images, store.names, strict=True):
        assert isinstance(img, np.memmap) and not img.flags.writeable
        np.testing.assert_array_equal(img, arrays[name])
    again = pickle.loads(pickle.dumps(store))  # spawn workers re-open the maps, not copy the data
    assert isinstance(again.images[0], np.memmap)
    np.testing.assert_array_equal(again.images[2], arrays["c"])


def test_augment_is_the_eight_dihedral_transforms():
    x = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    expect = [
        x,
        x.transpose(1, 0, 2)[::-1],  # 90 degrees counter-clockwise
        x[::-1, ::-1],
        x.transpose(1, 0, 2)[:, ::-1],
        x[:, ::-1],
        x.transpose(1, 0, 2)[::-1, ::-1],
        x[::-1],
        x.transpose(1, 0, 2),
    ]
    outs = [augment(x, k) for k in range(8)]
    for k in range(8):
        np.testing.assert_array_equal(outs[k], expect[k])
    assert len({o.tobytes() + bytes(o.shape) for o in outs}) == 8


def test_sample_is_the_exact_crop(store, arrays):
    s = PatchSampler(store, patch_size=16, batch_size=4, seed=3)
    seen_k, seen_img = set(), set()
    for step in range(30):
        for i in range(4):
            image, top, left, k = s.where(step, i)
            src = arrays[store.names[image]]
            scale = 255.0 if src.dtype == np.uint8 else 65535.0
            crop = src[top : top + 16, left : left + 16]
            expect = augment(crop, k).transpose(2, 0, 1).astype(np.float32) / np.float32(scale)
            got = s.sample(step, i)
            assert got.dtype == np.float32 and got.shape == (3, 16, 16) and got.flags.c_contiguous
            np.testing.assert_array_equal(got, expect)
            seen_k.add(k)
            seen_img.add(image)
            assert 0 <= top <= src.shape[0] - 16 and 0 <= left <= src.shape[1] - 16
    assert seen_k == set(range(8)) and seen_img == {0, 1, 2}


def test_pure_function_of_seed_step_index(store):
    a = PatchSampler(store, 16, 4, seed=5)
    b = PatchSampler(store, 16, 4, seed=5)
    b.batch(0), b.batch(99)  # drawing other steps first changes nothing
    assert torch.equal(a.batch(12), b.batch(12))
    assert not torch.equal(a.batch(12), a.batch(13))
    assert not torch.equal(a.batch(12), PatchSampler(store, 16, 4, seed=6).batch(12))
    np.testing.assert_array_equal(a.sample(12, 2), a.batch(12)[2].numpy())


def test_ddp_shares_make_the_single_process_batch(store):
    one = PatchSampler(store, 16, 4, seed=1)
    r0 = PatchSampler(store, 16, 4, seed=1, rank=0, world_size=2)
    r1 = PatchSampler(store, 16, 4, seed=1, rank=1, world_size=2)
    for step in (0, 7):
        assert r0.batch(step).shape == (2, 3, 16, 16)
        assert torch.equal(torch.cat([r0.batch(step), r1.batch(step)]), one.batch(step))


def test_loader_workers_match_batch(store):
    s = PatchSampler(store, 16, 3, seed=2)
    got = []
    for step, b in s.loader(start_step=5, num_workers=2):
        got.append((step, b))
        if len(got) == 5:
            break
    assert [g[0] for g in got] == [5, 6, 7, 8, 9]
    for step, b in got:
        assert torch.equal(b, s.batch(step))
    it = s.loader(start_step=40)
    step, b = next(it)
    assert step == 40 and torch.equal(b, s.batch(40))


def test_bad_sampler_settings(store):
    with pytest.raises(AprrdError, match=r"larger than the smallest training image side \(33 px, b\)"):
        PatchSampler(store, 34, 2, seed=0)
    with pytest.raises(AprrdError, match="multiple of the 2"):
        PatchSampler(store, 16, 3, seed=0, world_size=2)
    with pytest.raises(AprrdError, match="rank 2"):
        PatchSampler(store, 16, 4, seed=0, rank=2, world_size=2)
    PatchSampler(store, 33, 1, seed=0)  # the smallest side itself is fine


def test_missing_store_messages(tmp_path):
    with pytest.raises(AprrdError, match="no such folder.*aprrd prepare-data ROOT --out"):
        open_train_store(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AprrdError, match="no prepared training images"):
        open_train_store(tmp_path / "empty")
    with pytest.raises(AprrdError, match="no prepared sidd-val set.*aprrd prepare-data ROOT --out"):
        open_eval_set(tmp_path / "empty", "sidd-val")
    with pytest.raises(AprrdError, match="unknown evaluation set"):
        open_eval_set(tmp_path / "empty", "kodak")


def test_index_cannot_point_outside(tmp_path, arrays):
    prep = make_store(tmp_path / "prep", {"a": arrays["a"]})
    save_npy(tmp_path / "evil.npy", arrays["a"])
    write_index(prep, {"train": [{"name": "a", "file": "../evil.npy"}], "eval": {}})
    with pytest.raises(AprrdError, match="points outside"):
        open_train_store(prep)


def test_crop_reads_the_exact_window_at_every_edge(store, arrays):
    for i, name in enumerate(store.names):
        src = arrays[name]
        h, w = src.shape[:2]
        for top, left in ((0, 0), (h - 32, w - 32), (1, w - 32), (h - 32, 3)):
            got = store.crop(i, top, left, 32)
            assert got.dtype == src.dtype and got.flags.writeable
            np.testing.assert_array_equal(got, src[top : top + 32, left : left + 32])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="resident file pages are read from /proc")
def test_crops_leave_no_store_pages_resident(tmp_path):
    """A mapped read would leave ~64 KB per crop row resident (the kernel's fault-around)."""

    def file_rss_kb() -> int:
        return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("RssFile"))

    rng = np.random.default_rng(0)
    big = {"big": rng.integers(0, 256, (2048, 4096, 3), dtype=np.uint8)}  # 24 MB
    s = PatchSampler(open_train_store(make_store(tmp_path / "prep", big)), patch_size=128, batch_size=8, seed=0)
    s.batch(0)
    before = file_rss_kb()
    for step in range(1, 11):
        s.batch(step)  # 80 crops x 128 rows: through a map, about 80 * 128 * 64 KB = 640 MB could be touched
    assert file_rss_kb() - before < 4096
