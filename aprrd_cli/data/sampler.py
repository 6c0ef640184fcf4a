"""The training sampler: random crops with one of the 8 flips/rotations, as a pure function.

Sample ``index`` of global step ``step`` is drawn from a generator seeded by
``(seed, step, index)`` alone. There is no hidden state, so:

- resuming at step ``s`` reproduces the uninterrupted run exactly;
- DataLoader workers need no coordination (any worker can compute any step);
- DDP rank ``r`` of ``W`` takes indices ``[r*B/W, (r+1)*B/W)`` of the global batch ``B``,
  so the ``W`` ranks together see exactly what one process with batch ``B`` sees.

A sample reads one crop straight from the memory-mapped image (only those pages are
touched), applies the flip/rotation as a numpy view and makes one contiguous float copy.
The official loader cropped all 200 patches of an image to return one (6 samples/s on
a 2-core CPU); this one returns thousands per second.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch

from aprrd_cli.data.store import TrainStore
from aprrd_cli.errors import AprrdError

N_AUGMENTS = 8


def augment(crop: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th of the 8 dihedral transforms of an ``H x W x C`` array, as a view.

    ``k % 4`` quarter turns counter-clockwise (``np.rot90``), then for ``k >= 4`` a
    left-right mirror. ``k = 0`` is the identity.
    """
    out = np.rot90(crop, k % 4, axes=(0, 1))
    return out[:, ::-1] if k >= 4 else out


def draw(seed: int, step: int, index: int, sizes: list[tuple[int, int]], patch: int) -> tuple[int, int, int, int]:
    """(image, top, left, augmentation) of one sample: images uniformly, then a uniform crop position."""
    rng = np.random.Generator(np.random.PCG64([seed, step, index]))
    image = int(rng.integers(len(sizes)))
    h, w = sizes[image]
    top = int(rng.integers(h - patch + 1))
    left = int(rng.integers(w - patch + 1))
    k = int(rng.integers(N_AUGMENTS))
    return image, top, left, k


class PatchSampler:
    """Random crops with one of the 8 flips/rotations. Sample i of global step s is a PURE
    FUNCTION of (seed, s, i): no hidden state, so resuming at step s reproduces the
    uninterrupted run exactly, and DDP rank r of W takes indices [r*B/W, (r+1)*B/W) of the
    global batch B, so W ranks together see exactly what one process with batch B sees."""

    def __init__(
        self,
        store: TrainStore,
        patch_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(store) == 0:
            raise AprrdError("the training store holds no images; run `aprrd prepare-data` first")
        if patch_size < 1:
            raise AprrdError(f"patch size must be positive, got {patch_size}", exit_code=2)
        smallest = store.min_side
        if patch_size > smallest:
            small = min(range(len(store)), key=lambda i: min(store.images[i].shape[:2]))
            raise AprrdError(
                f"patch size {patch_size} is larger than the smallest training image side ({smallest} px, "
                f"{store.names[small]}); use a patch size of at most {smallest} or remove that image",
                exit_code=2,
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise AprrdError(f"rank {rank} is not within a world of {world_size} process(es)", exit_code=2)
        if batch_size < 1 or batch_size % world_size:
            raise AprrdError(
                f"batch size {batch_size} must be a positive multiple of the {world_size} process(es)", exit_code=2
            )
        self.store = store
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.local_batch = batch_size // world_size
        self.sizes = [(int(a.shape[0]), int(a.shape[1])) for a in store.images]
        self.scales = [np.float32(255.0 if a.dtype == np.uint8 else 65535.0) for a in store.images]

    def where(self, step: int, index: int) -> tuple[int, int, int, int]:
        """(image, top, left, augmentation) of sample ``index`` of step ``step``."""
        return draw(self.seed, step, index, self.sizes, self.patch_size)

    def sample_into(self, step: int, index: int, out: np.ndarray) -> None:
        """Write sample ``index`` of ``step`` into ``out`` (``3 x P x P`` float32)."""
        image, top, left, k = self.where(step, index)
        p = self.patch_size
        crop = self.store.crop(image, top, left, p)
        np.divide(augment(crop, k).transpose(2, 0, 1), self.scales[image], out=out, dtype=np.float32)

    def sample(self, step: int, index: int) -> np.ndarray:
        """Sample ``index`` (of the global batch) of step ``step``: ``3 x P x P`` float32 in [0, 1]."""
        out = np.empty((3, self.patch_size, self.patch_size), dtype=np.float32)
        self.sample_into(step, index, out)
        return out

    def batch(self, step: int, shared: bool = False) -> torch.Tensor:
        """This rank's share of the global batch of ``step``: ``[batch_size // world_size, 3, P, P]``.

        ``shared`` allocates it in shared memory, so that a DataLoader worker hands it over
        without the extra copy its pickler would otherwise make.
        """
        out = torch.empty((self.local_batch, 3, self.patch_size, self.patch_size), dtype=torch.float32)
        if shared:
            out.share_memory_()
        arr = out.numpy()
        first = self.rank * self.local_batch
        for j in range(self.local_batch):
            self.sample_into(step, first + j, arr[j])
        return out

    def loader(
        self, start_step: int, num_workers: int = 0, pin_memory: bool = False
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(step, batch(step))`` for ``step = start_step, start_step + 1, ...`` forever.

        With workers, a DataLoader computes the steps in parallel and returns them in
        order; since a batch depends only on its step, each worker's seeding is implied
        by the steps it is given and the values equal ``batch(step)`` exactly.
        """
        if num_workers <= 0:
            for step in itertools.count(start_step):
                b = self.batch(step)
                yield step, (b.pin_memory() if pin_memory and torch.cuda.is_available() else b)
            return
        loader = torch.utils.data.DataLoader(
            _StepDataset(self),
            batch_size=None,
            sampler=itertools.count(start_step),
            num_workers=num_workers,
            pin_memory=pin_memory and torch.cuda.is_available(),
            worker_init_fn=_one_thread,
            persistent_workers=False,
            prefetch_factor=2,
        )
        yield from loader


# The release's data: per training image, 200 crops drawn once when it loads the data.
RELEASE_CROPS = 200
RELEASE_STREAM = 0x2E1EA5E  # keeps these draws apart from the random sampler's (seed, step, index) streams


class ReleaseSampler(PatchSampler):
    """The release's data order (``--sampling release``): per image, ``RELEASE_CROPS`` crop corners
    in ``[0, side - crop)`` and as many of the 8 flips/rotations, drawn once per run from the seed;
    iterated in order without shuffling (image by image, its crops in order), batches of
    consecutive crops, every epoch repeating the same crops in the same order.

    Global sample ``n = step * batch_size + index`` is crop ``n mod (N * 200)`` of that list, a
    pure function of (seed, step, index) as for ``PatchSampler``: a resumed run repeats the
    uninterrupted one and DDP rank r takes indices ``[r*B/W, (r+1)*B/W)`` of each global batch.
    ``crop`` larger than the patch gives the patch at the crop's centre (RD: the centre 128 of the
    release's 256 crops; a flip or rotation of a square keeps its centre, so the order does not
    matter). A batch may span two images, and the last batch of an epoch the next epoch's start.
    """

    def __init__(
        self,
        store: TrainStore,
        patch_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        crop_size: int | None = None,
    ) -> None:
        crop = patch_size if crop_size is None else crop_size
        if crop < patch_size or (crop - patch_size) % 2:
            raise AprrdError(f"a crop of {crop} px cannot centre a {patch_size} px patch", exit_code=2)
        super().__init__(store, crop, batch_size, seed, rank, world_size)  # checks the crop fits every image
        self.patch_size = patch_size
        self.crop_size = crop
        self.margin = (crop - patch_size) // 2
        self.crops = [release_crops(self.seed, i, h, w, crop) for i, (h, w) in enumerate(self.sizes)]

    @property
    def epoch_samples(self) -> int:
        """Samples in one pass over the drawn crops."""
        return len(self.sizes) * RELEASE_CROPS

    def where(self, step: int, index: int) -> tuple[int, int, int, int]:
        n = (step * self.batch_size + index) % self.epoch_samples
        image, j = divmod(n, RELEASE_CROPS)
        top, left, k = self.crops[image][j]
        return image, int(top) + self.margin, int(left) + self.margin, int(k)


def release_crops(seed: int, image: int, height: int, width: int, crop: int) -> np.ndarray:
    """``RELEASE_CROPS x 3`` (top, left, augmentation) of one image, drawn once from (seed, image).

    Corners in ``[0, side - crop)`` as the release draws them (its upper bound excluded); an image
    side equal to the crop has the one corner 0."""
    rng = np.random.Generator(np.random.PCG64([seed, RELEASE_STREAM, image]))
    tops = rng.integers(max(1, height - crop), size=RELEASE_CROPS)
    lefts = rng.integers(max(1, width - crop), size=RELEASE_CROPS)
    ks = rng.integers(N_AUGMENTS, size=RELEASE_CROPS)
    return np.stack([tops, lefts, ks], 1)


SAMPLINGS = ("random", "release")


class _StepDataset(torch.utils.data.Dataset):
    """Map-style dataset whose item ``step`` is the whole batch of that step."""

    def __init__(self, sampler: PatchSampler) -> None:
        self.sampler = sampler

    def __getitem__(self, step: int) -> tuple[int, torch.Tensor]:
        return step, self.sampler.batch(step, shared=True)

    def __len__(self) -> int:  # the sampler is infinite; DataLoader only needs a number here
        return 2**62


def _one_thread(worker_id: int) -> None:
    """Workers do numpy copies, not torch maths: one thread each avoids oversubscribing the CPU."""
    torch.set_num_threads(1)
