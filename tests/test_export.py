"""``aprrd export``: ONNX (run in onnxruntime) and TorchScript files agree with aprrd's own output to
1e-4 on real photos of odd sizes, 8- and 16-bit; any batch and size; metadata in the file; the
reference form equals the fast path; one-line errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import aprrd_cli as aprrd
from aprrd_cli.data.images import read_image
from aprrd_cli.export import read_torchscript_metadata
from aprrd_cli.models import build
from aprrd_cli.portable import PaddedNet
from tests.helpers import REAL, flat, need, one_line

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency (pip install -e '.[dev]')")
pytest.importorskip("onnx", reason="ONNX export needs the export extra (pip install -e '.[dev]')")


def photo(h: int, w: int) -> np.ndarray:
    """A real noisy crop of cc15 (a 512x512 photo), h x w, uint8."""
    files = sorted(need(REAL / "cc15" / "noisy").glob("*.png"))
    return read_image(files[0])[0][:h, :w]


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["denoised"], {"noisy": x})[0]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["official", "teacher"])
def test_exported_files_agree_with_aprrd_on_real_photos(
    cli, which, tmp_path, official_student_path, random_teacher_path
):
    src = official_student_path if which == "official" else random_teacher_path
    onnx, ts = tmp_path / "m.onnx", tmp_path / "m.pt"
    code, _, err = cli("export", src, onnx)
    assert code == 0, err
    assert f"-> {onnx} (ONNX opset 17" in flat(err)
    assert cli("export", src, ts)[0] == 0
    model = aprrd.load(src, device="cpu", precision="fp32", tile=0)
    scripted = torch.jit.load(str(ts))
    # the student: 8-bit 481 x 321 (landscape, odd) and 16-bit 161 x 243 (portrait); the teacher (four
    # rotations of a larger UNet, slower) on smaller crops of the same kinds
    big, small = ((321, 481), (243, 161)) if which == "official" else ((97, 131), (75, 53))
    eight = photo(*big)
    sixteen = photo(*small).astype(np.uint16) * 257 + 100
    for arr, scale in ((eight, 255.0), (sixteen, 65535.0)):
        x = torch.from_numpy(arr.astype(np.float32) / scale).permute(2, 0, 1)[None].contiguous()
        ours = model.denoise(x)
        via_onnx = torch.from_numpy(run_onnx(onnx, x.numpy()))
        with torch.no_grad():
            via_ts = scripted(x)
        assert via_onnx.shape == via_ts.shape == ours.shape == x.shape
        assert (via_onnx - ours).abs().max() < 1e-4
        assert (via_ts - ours).abs().max() < 1e-4
        # and the array API's 16-bit output is the exported output rounded to 16 bits
        if arr.dtype == np.uint16:
            api = model.denoise(arr).astype(np.float64) / 65535.0
            onnx_hwc = via_onnx[0].permute(1, 2, 0).double().numpy()
            assert np.abs(api - onnx_hwc).max() < 1e-4


def test_dynamic_batch_and_sizes_and_metadata(tmp_path, tiny_student) -> None:
    from aprrd_cli.export import export_model

    done = export_model(str(tiny_student), tmp_path / "s.onnx")
    export_model(str(tiny_student), tmp_path / "s.pt")
    import onnx

    proto = onnx.load(str(tmp_path / "s.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta == done.metadata and meta["opset"] == "17" and meta["min_side"] == "17"
    assert meta["input_range"] == meta["output_range"] == "0 1" and meta["kind"] == "student"
    assert [i.name for i in proto.graph.input] == ["noisy"] and [o.name for o in proto.graph.output] == ["denoised"]
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]
    ts_meta = read_torchscript_metadata(tmp_path / "s.pt")
    assert ts_meta["output"] == meta["output"] and "opset" not in ts_meta
    model = aprrd.load(tiny_student, device="cpu", precision="fp32", tile=0)
    scripted = torch.jit.load(str(tmp_path / "s.pt"))
    for shape in ((3, 3, 17, 17), (1, 3, 64, 64), (2, 3, 33, 95)):
        x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        ours = model.denoise(x)
        assert (torch.from_numpy(run_onnx(tmp_path / "s.onnx", x.numpy())) - ours).abs().max() < 1e-5
        assert (scripted(x) - ours).abs().max() < 1e-5


@pytest.mark.parametrize("arch", ["nbsn-1.00M", "nbsn-1.02M", "atbsn"])
def test_the_reference_form_is_the_fast_path(arch) -> None:
    """The plain path export records gives the inference path's numbers, whatever the grad mode."""
    torch.manual_seed(0)
    net = build(arch, width=8).eval()
    x = torch.rand(2, 3, 45, 70)
    fast = PaddedNet(net)
    plain = PaddedNet(net, for_export=True)
    with torch.no_grad():
        want = fast(x)
        assert (plain(x) - want).abs().max() < 1e-5
    assert (plain(x) - want).abs().max() < 1e-5  # grad mode on: the same graph
    assert not any(getattr(m, "reference_form", False) for m in net.modules())  # the caller's network is untouched


def test_bad_requests_are_one_line_errors(cli, tmp_path, tiny_student, monkeypatch) -> None:
    code, _, err = cli("export", tiny_student, tmp_path / "m.txt")
    assert code == 2 and "cannot tell the format from the suffix '.txt'" in one_line(err)
    code, _, err = cli("export", tiny_student, tmp_path / "m.onnx", "--format", "tflite")
    assert code == 2 and "--format must be onnx or torchscript" in one_line(err)
    code, _, err = cli("export", tiny_student, tmp_path / "m.onnx", "--format", "torchscript")
    assert code == 2 and "--format torchscript disagrees with OUTPUT" in one_line(err) and "name it m.pt" in err
    for opset in ("10", "21"):
        code, _, err = cli("export", tiny_student, tmp_path / "m.onnx", "--opset", opset)
        assert code == 2 and "--opset must be 11 to 20 (from reflect padding" in one_line(err)
    code, _, err = cli("export", tmp_path / "nothing.pth", tmp_path / "m.onnx")
    assert code == 1 and "no model at" in one_line(err)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    code, _, err = cli("export", tiny_student, tmp_path / "m.onnx")
    assert code == 1 and flat(one_line(err)).endswith("pip install 'aprrd[export]' (or pip install onnx)")
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing half-written
