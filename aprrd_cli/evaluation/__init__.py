"""Scoring as the field does: the metrics (``metrics``), the protocols built on one scorer of
denoised images (``protocols``: pairs, SIDD validation and benchmark, DND), the benchmark
servers' files (``submission``), side-by-side pictures (``pictures``) and the noise
statistics of real pairs (``noise_stats``)."""
