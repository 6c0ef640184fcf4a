"""Building blocks shared by the teacher and the students (docs/method.md section 1).

The blind-spot variants look only at rows above (and including) their own: the
"one zero row on top, drop the last row" shift of the reference is folded into the
convolution's own padding (2 rows on top, none below), which gives the same numbers
without a pad and a crop per layer.

Speed (measured in docs/performance.md): the decoders' "upsample x2 (nearest), concatenate
the skip, 3x3 conv" is computed as ONE 4x4 stride-2 transposed convolution of the
low-resolution input plus a 3x3 convolution of the skip (``ConvBlock.up_cat``). Nearest
upsampling repeats each pixel, so the nine taps over the upsampled image collapse to 16
taps per low-resolution pixel instead of 36: the same sums with 2.25x fewer multiplications
on the upsampled channels and no upsampled or concatenated copy in memory. The networks
also run channels-last (NHWC), the layout the CPU and GPU convolution kernels prefer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

LEAK = 0.1


def in_fp32(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in float32 even under bf16/fp16 autocast.

    For the few convolutions that read the image itself or make the output image: bf16 keeps 8
    bits of mantissa, a step of 1/256 between 0.5 and 1, the size of a grey level. Rounding the
    noisy input there cost the official student 0.06 dB on cc15 (light noise, small corrections);
    in fp32 these layers bring bf16 within 0.01 dB of fp32, for a few per cent of the network's
    work (docs/training.md, "bf16 on the CPU").
    """
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return layer(x.float())
    return layer(x)


class ConvBlock(nn.Module):
    """3x3 conv + LeakyReLU(0.1), blind (sees only rows i-2..i) or normal.

    Under autocast (``in_fp32``): ``full_precision`` runs the whole layer in float32 (the first
    layer, which reads the image, and the student's last, which makes it); ``image_skip`` runs
    in float32 the part of an ``up_cat`` that reads a skip which is the image itself.
    """

    def __init__(self, cin: int, cout: int, blind: bool) -> None:
        super().__init__()
        self.blind = blind
        self.full_precision = False
        self.image_skip = False
        self.reference_form = False  # see use_reference_form
        self.conv = nn.Conv2d(cin, cout, 3, padding=0 if blind else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.full_precision and torch.is_autocast_enabled(x.device.type):
            return in_fp32(self._plain, x)
        return self._plain(x)

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        if self.blind:
            return F.leaky_relu(blind_conv(x, self.conv.weight, self.conv.bias, self.reference_form), LEAK)
        return F.leaky_relu(self.conv(x), LEAK, inplace=not self.reference_form)

    def up_cat(self, z: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``self(cat(upsample(z), skip))`` without building the upsampled or concatenated tensors."""
        if self.reference_form:
            return self(torch.cat((upsample(z), skip), 1))
        return F.leaky_relu(up_cat_conv(self.conv, z, skip, self.blind, self.image_skip), LEAK, inplace=True)


def up_cat_conv(
    conv: nn.Conv2d, z: torch.Tensor, skip: torch.Tensor, blind: bool = False, skip_in_fp32: bool = False
) -> torch.Tensor:
    """``conv(cat(upsample(z), skip))`` (3x3, blind or padded by 1): a transposed conv of ``z`` + a conv of ``skip``.

    ``skip_in_fp32``: the skip is the image itself; under autocast its convolution (3 input
    channels, cheap) runs in float32 and the sum is float32 (``in_fp32``).
    """
    wt, ws = _split_weights(conv, z.shape[1])
    if blind:
        # the blind conv's output row r is the normal conv's row r - 1: no top padding, first 2h rows
        y = F.conv_transpose2d(z, wt, stride=2, padding=(0, 1))[:, :, : 2 * z.shape[2]]

        def skip_conv(s: torch.Tensor) -> torch.Tensor:
            return blind_conv(s, ws, conv.bias)

    else:
        y = F.conv_transpose2d(z, wt, stride=2, padding=1)

        def skip_conv(s: torch.Tensor) -> torch.Tensor:
            return F.conv2d(s, ws, conv.bias, padding=1)

    if skip_in_fp32 and torch.is_autocast_enabled(skip.device.type):
        return torch.add(in_fp32(skip_conv, skip), y.float())
    if blind:
        return torch.add(skip_conv(skip), y)
    return skip_conv(skip).add_(y)


def blind_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, reference_form: bool = False
) -> torch.Tensor:
    """The blind 3x3 conv: output row i sees input rows i-2..i only.

    Padding 2 rows on top AND bottom and keeping the first H output rows is the reference's
    "zero row on top, conv, drop the last row" without a padded copy of the input.
    ``reference_form``: always the padded input, whose graph does not depend on the input's size.
    """
    if reference_form or torch.is_grad_enabled():
        # training: the row view's backward would scatter every gradient into a zeroed,
        # taller buffer and copy it again; a padded input is cheaper there
        return F.conv2d(F.pad(x, (1, 1, 2, 0)), weight, bias)
    return F.conv2d(x, weight, bias, padding=(2, 1))[:, :, : x.shape[2]]


def _split_weights(conv: nn.Conv2d, cz: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The transposed weight for the upsampled channels and the skip's own weight.

    Without gradients they are cached on the module (keyed on the weight's version, so an
    optimiser step or a ``load_state_dict`` refreshes them): inference derives them once.
    """
    w = conv.weight
    if torch.is_grad_enabled():
        return upsampled_weight(w[:, :cz]), w[:, cz:]
    # under autocast the folded weight comes out in the autocast dtype: a later call without it
    # (or with another dtype) must not reuse it
    dev = w.device.type
    cast = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
    key = (w.data_ptr(), w._version, w.dtype, w.device, cz, torch.is_inference_mode_enabled(), cast)
    cached = conv.__dict__.get("_up_cat_cache")
    if cached is None or cached[0] != key:
        cached = (key, upsampled_weight(w[:, :cz]).contiguous(), w[:, cz:].contiguous())
        conv.__dict__["_up_cat_cache"] = cached
    return cached[1], cached[2]


# Row k of this matrix lists which taps of a 3-tap kernel over a x2 nearest-upsampled signal
# land on tap k of the equivalent 4-tap, stride-2 transposed kernel over the original signal.
_UP_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))
_UP_TAPS_ON: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _up_taps(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``_UP_TAPS`` as a tensor on ``device``, made once: in training each decoder's forward
    needs it, and a copy from Python data each time would make every step wait for the GPU."""
    key = (device, dtype)
    if key not in _UP_TAPS_ON:
        with torch.inference_mode(False):  # a normal tensor even when made during inference: training reuses it
            _UP_TAPS_ON[key] = torch.tensor(_UP_TAPS, dtype=dtype, device=device)
    return _UP_TAPS_ON[key]


def upsampled_weight(w: torch.Tensor) -> torch.Tensor:
    """``Cout x Cin x 3 x 3`` conv weight over ``upsample(z)`` -> ``Cin x Cout x 4 x 4`` transposed one over ``z``.

    Differentiable, so training uses the same path.
    """
    m = _up_taps(w.device, w.dtype)
    return (m @ w @ m.T).transpose(0, 1)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """NHWC memory layout (same values): faster convolutions on CPU (oneDNN) and GPU (cuDNN)."""
    if x.device.type in ("cpu", "cuda"):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def pool(x: torch.Tensor, blind: bool, reference_form: bool = False) -> torch.Tensor:
    """2x2 max-pool; the blind one shifts down one row (zero row on top) first.

    The blind one pools with one padded row on top instead of a shifted copy; the padding
    is -inf there, and the reference's row is zero, so the first output row is then
    clamped at 0 (max(0, a, b) = max(a, b, 0)). ``reference_form``: the shifted copy itself,
    the reference's arithmetic with no size-dependent crop or in-place write.
    """
    if not blind:
        return F.max_pool2d(x, 2)
    if reference_form:
        return F.max_pool2d(shift_down(x, 1), 2)
    y = F.max_pool2d(x, 2, padding=(1, 0))[:, :, : x.shape[2] // 2]
    if torch.is_grad_enabled():
        return torch.cat((y[:, :, :1].clamp(min=0), y[:, :, 1:]), 2)
    y[:, :, 0].clamp_(min=0)
    return y


def shift_down(x: torch.Tensor, k: int) -> torch.Tensor:
    """Pad ``k`` zero rows on top and drop the last ``k`` rows."""
    if k == 0:
        return x
    return F.pad(x, (0, 0, k, 0))[:, :, :-k, :]  # a negative end: the same rows, and no size in a traced graph


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


# Rotations exactly as the reference writes them (docs/method.md section 1).
def rot(x: torch.Tensor, r: int) -> torch.Tensor:
    if r == 0:
        return x
    if r == 1:
        return x.transpose(2, 3).flip(3)
    if r == 2:
        return x.flip(2).flip(3)
    return x.transpose(2, 3).flip(2)


def unrot(z: torch.Tensor, r: int) -> torch.Tensor:
    if r == 0:
        return z
    if r == 1:
        return z.transpose(2, 3).flip(2)
    if r == 2:
        return z.flip(2).flip(3)
    return z.transpose(2, 3).flip(3)


def use_reference_form(model: nn.Module) -> None:
    """Switch every layer of ``model`` to the reference form, for export (ONNX, TorchScript).

    The fast paths choose their arithmetic from global torch state (``torch.is_grad_enabled``),
    cache folded weights on the modules, write into slices in place and branch on the input's
    shape: a traced graph would freeze whichever path the trace happened to take. The reference
    form is one path for every state and size: upsample, concatenate, convolve; pad and shift
    copies; the teacher's rotations in two batches. Same numbers to float rounding (tests/test_export.py).
    """
    for m in model.modules():
        if hasattr(m, "reference_form"):
            m.reference_form = True


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (a=0.1) conv weights, zero biases, as the reference does."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=LEAK)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
