"""The release's training loop, replayed step for step (../shared/reference/train_golden.npz).

The golden file holds three steps of each stage of the official release's own training code
(float32, CPU) with every random draw recorded. Here the recorded draws are fed into the very
code ``train-apr`` and ``distill`` run: the stage builders (``apr_stage``, ``rd_stage``), the
engine's ``train`` with the optimiser and schedule it builds (lr 3e-4, a 4-iteration cosine),
initial weights read from the official checkpoint format through ``--init``/``load_teacher``.
Only the source of the draw changes (the stages' replay seam), and the first update is made
from the release's step-1 gradients once ours have been checked against them (see ``replay``).
Each tolerance is 10x the float noise the golden's README measured between two runs of the
release itself (1 against 2 threads); a wrong hole, draw, loss term, optimiser setting or
learning rate lands orders of magnitude away.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from aprrd_cli.losses.apr import N_PAIRS, OFFSETS, PAIRS, APRDraw
from aprrd_cli.losses.rd import teacher_targets
from aprrd_cli.models.constants import INFER_SHIFT
from aprrd_cli.training.config import APRConfig, RDConfig, RunOptions
from aprrd_cli.training.engine import train
from aprrd_cli.training.stages import apr_stage, load_teacher, rd_stage
from tests.helpers import REFERENCE, need

GOLDEN = REFERENCE / "train_golden.npz"
CPU = torch.device("cpu")
STEPS = 3  # the golden's steps per stage, of a 4-iteration run (so the cosine moves)
LR = 3e-4

# The README's float noise (two runs of the release, 1 and 2 threads) and the margin we allow:
# our networks order float operations differently (one forward over [h1(y); y], folded blind
# convolutions), so we allow 10x the release's own spread, still far below any real mistake.
MARGIN = 10
APR_LOSS_NOISE = 5e-6
APR_GRAD_NOISE = 5e-5
APR_PROBE_NOISE = 2.2e-4
RD_LOSS_NOISE = 5e-7
RD_TARGET_NOISE = 2e-6
RD_GRAD_NOISE = 7e-5
RD_PROBE_NOISE = 1.4e-6


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    need(GOLDEN)
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


def official_file(golden: dict[str, np.ndarray], prefix: str, path: Path) -> Path:
    """The golden's weights under ``prefix`` as an official release checkpoint (its key names)."""
    sd = {k[len(prefix) :]: torch.from_numpy(v.copy()) for k, v in golden.items() if k.startswith(prefix)}
    torch.save({"model_state_dict": sd}, path)
    return path


def our_pair_numbers(window: np.ndarray, index: np.ndarray) -> torch.Tensor:
    """Our pair numbers for the release's draw. The release numbers its 72 pairs in its own order,
    ``window[k] = ((dx1, dy1), (dx2, dy2))``; ours (``losses/apr.py``) number the 3x3 offsets
    row-major over ``(drow, dcol) = (dy, dx)`` and the pairs ``(i, j), i != j`` in order. Written
    out here, independently of the code's tables, so a wrong or transposed table is caught."""
    off = window.astype(np.int64)[index.astype(np.int64)]  # B x H x W x 2 (first, second) x 2 (dx, dy)
    first = (off[..., 0, 1] + 1) * 3 + (off[..., 0, 0] + 1)
    second = (off[..., 1, 1] + 1) * 3 + (off[..., 1, 0] + 1)
    return torch.from_numpy(first * 8 + second - (second > first))


def release_h(y: np.ndarray, window: np.ndarray, index: np.ndarray, which: int) -> np.ndarray:
    """The README's definition of h1 (which=0) / h2 (which=1) under the release's draw."""
    b, _, h, w = y.shape
    off = window.astype(np.int64)[index.astype(np.int64)][..., which, :]
    rows = np.clip(np.arange(h)[None, :, None] + off[..., 1], 0, h - 1)
    cols = np.clip(np.arange(w)[None, None, :] + off[..., 0], 0, w - 1)
    return y[np.arange(b)[:, None, None], :, rows, cols].transpose(0, 3, 1, 2)


class FixedBatch:
    """The engine's sampler contract, giving the golden's one batch at every step."""

    def __init__(self, y: np.ndarray) -> None:
        self.y = torch.from_numpy(y.copy())

    def loader(self, start_step: int, num_workers: int = 0, pin_memory: bool = False):
        for step in itertools.count(start_step):
            yield step, self.y.clone()


def golden_grads(golden: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: torch.from_numpy(v.copy()) for k, v in golden.items() if k.startswith(prefix)}


def replay(stage, cfg, run_dir: Path, y: np.ndarray, release_grads: dict[str, torch.Tensor]) -> dict:
    """Three steps of the engine's ``train`` on ``stage``; records what each step used and gave:
    the learning rate and the first step's gradients as the optimiser sees them, each loss as
    the stage's own loss function returned it.

    The first update is then made from the release's step-1 gradients (ours are asserted equal to
    them separately). Why: Adam's first step moves every weight by about ``lr * sign(g)``, so a
    gradient entry near 0 whose sign float noise flips moves by 2 lr instead of ~0; our folded
    upsample-concat convolutions give step-1 gradients within 3x the release's thread-to-thread
    noise, but with ~100 such flips, which alone moved the student's probe output by 2e-3. From the
    release's step-1 gradients, our steps 2 and 3 (update, draws, losses) land within 2x the
    release's own noise (measured: RD losses 2.4e-7, probe 2.4e-6; APR losses 7e-6, probe 3e-4).
    """
    names = {id(p): n for n, p in stage.model.named_parameters()}
    lrs: list[float] = []
    grads: dict[str, torch.Tensor] = {}
    losses: list[float] = []

    def before_step(opt, args, kwargs) -> None:
        lrs.append(opt.param_groups[0]["lr"])
        if grads:
            return
        for group in opt.param_groups:
            for p in group["params"]:
                grads[names[id(p)]] = p.grad.detach().clone()
                p.grad.copy_(release_grads[names[id(p)]])

    real_loss = stage.loss

    def loss(net, y, share):
        value = real_loss(net, y, share)
        losses.append(value.item())
        return value

    stage.loss = loss
    opts = RunOptions(run_dir=run_dir, device="cpu", save_every=100, stop_at=STEPS, show_progress=False)
    handle = register_optimizer_step_pre_hook(before_step)
    try:
        train(stage, cfg, opts, FixedBatch(y), CPU, "fp32")
    finally:
        handle.remove()
    return {"lr": lrs, "loss": losses, "grad": grads, "model": stage.model}


@pytest.fixture(scope="module")
def apr(golden, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("replay_apr")
    init = official_file(golden, "teacher_init__", tmp / "teacher_init.pth")
    window = golden["apr_window"]
    draws = [APRDraw.from_pairs(our_pair_numbers(window, golden[f"apr_draw{s}"])) for s in range(STEPS)]
    cfg = APRConfig(iters=STEPS + 1, batch_size=2, patch_size=64, lr=LR, init=str(init))
    opts = RunOptions(run_dir=tmp / "run", device="cpu", show_progress=False)
    stage = apr_stage(cfg, CPU, opts, "golden", draws=iter(draws))
    out = replay(stage, cfg, tmp / "run", golden["y_apr"], golden_grads(golden, "apr_grad0__"))
    out["draws"] = draws
    return out


@pytest.fixture(scope="module")
def rd(golden, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("replay_rd")
    init = official_file(golden, "student_init__", tmp / "student_init.pth")
    teacher_path = official_file(golden, "teacher_after__", tmp / "teacher.pth")
    teacher, digest = load_teacher(teacher_path)  # the golden's stored teacher: no APR float noise
    choices = [torch.from_numpy(golden[f"rd_draw{s}"].astype(np.int64)).unsqueeze(1) for s in range(STEPS)]
    cfg = RDConfig(iters=STEPS + 1, batch_size=2, patch_size=64, lr=LR, init=str(init), teacher=str(teacher_path))
    opts = RunOptions(run_dir=tmp / "run", device="cpu", show_progress=False)
    stage = rd_stage(cfg, CPU, opts, teacher, digest, "golden", choices=iter(choices))
    out = replay(stage, cfg, tmp / "run", golden["y_rd"], golden_grads(golden, "rd_grad0__"))
    out["teacher"] = teacher
    return out


def test_our_pair_table_is_the_releases(golden):
    """Our draw is uniform over the same 72 ordered pairs of distinct 3x3 offsets as the release's
    (in another order, which the replay translates)."""
    ours = {(tuple(OFFSETS[i].tolist()), tuple(OFFSETS[j].tolist())) for i, j in PAIRS.tolist()}
    release = {((dy1, dx1), (dy2, dx2)) for (dx1, dy1), (dx2, dy2) in golden["apr_window"].tolist()}
    assert N_PAIRS == len(PAIRS) == len(ours) == 72
    assert ours == release


def test_replayed_draw_moves_the_pixels_the_release_moved(golden, apr):
    """h1 and h2 of our code under the translated draw are the README's h1 and h2, exactly
    (a gather moves values without arithmetic: no tolerance)."""
    y = golden["y_apr"]
    for s, d in enumerate(apr["draws"]):
        for which, h in ((0, d.h1), (1, d.h2)):
            expected = release_h(y, golden["apr_window"], golden[f"apr_draw{s}"], which)
            np.testing.assert_array_equal(h(torch.from_numpy(y)).numpy(), expected, err_msg=f"step {s} h{which + 1}")


# What each stage's replay is checked to, with the measured difference: 10x the release's spread
TOLERANCE = {
    "apr": {"loss": MARGIN * APR_LOSS_NOISE, "grad": MARGIN * APR_GRAD_NOISE},  # measured 7e-6, 1.1e-4
    "rd": {"loss": MARGIN * RD_LOSS_NOISE, "grad": MARGIN * RD_GRAD_NOISE},  # measured 2.4e-7, 2.3e-4
}


@pytest.mark.parametrize("stage", ["apr", "rd"])
def test_learning_rate_of_every_step(golden, stage, request):
    """The learning rate each step used, as the optimiser held it at the step (a 4-iteration cosine)."""
    # float64 arithmetic on both sides: equal to rounding
    np.testing.assert_allclose(request.getfixturevalue(stage)["lr"], golden[f"{stage}_lr"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("stage", ["apr", "rd"])
def test_loss_of_every_step(golden, stage, request):
    # the release's spread: APR 5e-6 (losses ~1-3), RD 5e-7 (six L1 means of ~0.5 summed)
    got = request.getfixturevalue(stage)["loss"]
    np.testing.assert_allclose(got, golden[f"{stage}_loss"], rtol=0, atol=TOLERANCE[stage]["loss"])


@pytest.mark.parametrize("stage", ["apr", "rd"])
def test_first_step_gradients(golden, stage, request):
    """Parameter by parameter, against the release's gradients before its first update."""
    got = request.getfixturevalue(stage)["grad"]
    expected = golden_grads(golden, f"{stage}_grad0__")
    assert expected.keys() == got.keys()
    for name, g in expected.items():
        # the release's spread: APR 5e-5 (largest gradient 2.1), RD 7e-5 (largest 1.1)
        np.testing.assert_allclose(got[name], g, rtol=0, atol=TOLERANCE[stage]["grad"], err_msg=name)


def test_apr_teacher_after_three_steps(golden, apr):
    """The trained teacher on the probe crop, hole 1 (the inference hole), no padding."""
    net = apr["model"].eval()
    with torch.no_grad():
        out = net(torch.from_numpy(golden["probe"]), INFER_SHIFT).numpy()
    # measured: 3e-4 at most, against the release's 2.2e-4 spread (outputs up to ~1)
    np.testing.assert_allclose(out, golden["apr_after__probe_hole1"], rtol=0, atol=MARGIN * APR_PROBE_NOISE)


def test_rd_targets(golden, rd):
    """The frozen teacher's six targets T_0..T_5 (reflect-pad 16), before recharging."""
    with torch.no_grad():
        got = teacher_targets(rd["teacher"], torch.from_numpy(golden["y_rd"])).numpy()
    # measured: 3.2e-6, the release's spread 2e-6; a wrong pad, shift or rotation moves targets by ~1e-2 or more
    np.testing.assert_allclose(got, golden["rd_targets0"], rtol=0, atol=MARGIN * RD_TARGET_NOISE)


def test_rd_student_after_three_steps(golden, rd):
    net = rd["model"].eval()
    with torch.no_grad():
        out = net(torch.from_numpy(golden["probe"])).numpy()
    # measured: 2.4e-6 at most, against the release's 1.4e-6 spread
    np.testing.assert_allclose(out, golden["rd_after__probe"], rtol=0, atol=MARGIN * RD_PROBE_NOISE)
