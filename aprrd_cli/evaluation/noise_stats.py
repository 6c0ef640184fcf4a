"""Noise statistics of real or simulated pairs: how strongly the noise (noisy - clean) is
correlated between neighbouring pixels, what makes a plain blind-spot network copy it, and
the noisy input's PSNR. ``python -m aprrd_cli.evaluation.noise_stats PAIRS_DIR ...`` prints
them for folders of pairs and for the demo's camera simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aprrd_cli.data.pairs import load_pairs
from aprrd_cli.evaluation.protocols import score_arrays


def neighbour_correlation(noisy: np.ndarray, clean: np.ndarray, distances: tuple[int, ...] = (1, 2)) -> list[float]:
    """Correlation of the noise (noisy - clean) with its horizontal neighbours at each distance,
    per channel (Pearson), averaged over channels."""
    n = noisy.astype(np.float64) - clean.astype(np.float64)
    result = []
    for d in distances:
        cs = []
        for c in range(n.shape[2]):
            a = n[:, :-d, c].ravel()
            b = n[:, d:, c].ravel()
            a = a - a.mean()
            b = b - b.mean()
            denom = np.sqrt((a * a).sum() * (b * b).sum())
            cs.append(float((a * b).sum() / denom) if denom > 0 else 0.0)
        result.append(float(np.mean(cs)))
    return result


def measure_pairs(folder: Path) -> tuple[float, float, float, int]:
    """Mean noise correlation at distance 1 and 2 and mean PSNR (dB) over ``folder/{noisy,gt}`` pairs."""
    pairs = load_pairs(folder)
    corr = np.array([neighbour_correlation(noisy, gt) for _, noisy, gt in pairs])
    psnr = score_arrays([noisy for _, noisy, _ in pairs], pairs)["psnr"]
    return float(corr[:, 0].mean()), float(corr[:, 1].mean()), float(psnr), len(pairs)


def main(argv: list[str] | None = None) -> None:
    """Print the noise correlation and PSNR of each folder of pairs, and of the simulator's demo pairs."""
    import sys
    import tempfile

    from aprrd_cli.data.demo_set import build_demo_set

    args = sys.argv[1:] if argv is None else argv
    print(f"{'pairs':<40} {'n':>3} {'corr d=1':>9} {'corr d=2':>9} {'PSNR dB':>8}")
    for folder in [Path(a) for a in args]:
        c1, c2, p, n = measure_pairs(folder)
        print(f"{str(folder):<40} {n:>3} {c1:>9.3f} {c2:>9.3f} {p:>8.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        c1, c2, p, n = measure_pairs(build_demo_set(Path(tmp)) / "pairs")
        print(f"{'simulator (demo set pairs, seed 0)':<40} {n:>3} {c1:>9.3f} {c2:>9.3f} {p:>8.2f}")


if __name__ == "__main__":
    main()
