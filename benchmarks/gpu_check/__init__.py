"""``make gpu-check``: one prepared command that proves and measures aprrd's GPU paths.

Run on a GPU machine from the repository root, with nothing installed beyond PyTorch and the
libraries the tool uses (``PYTHONPATH=.``, no ``pip install``)::

    make gpu-check GPU_OUT=/tmp/out       # or: PYTHONPATH=. python3 -m benchmarks.gpu_check --out DIR

Each step (environment, the device tests, throughput at the paper's settings, the engine end to
end, inference on a 12 MP photo, a short real training run) runs in its own process with its own
time limit; a failure or a time-out is recorded and the next step runs, and the summary is
rewritten after every step, so a run cut short still reports what it did. The output folder
holds at most 8 files: ``summary.md``, ``results.json``, ``log.txt``, ``pytest.txt``,
``curves.png`` and ``crops.png``. ``--tiny --device cpu`` runs every step at toy sizes (the
test suite does, so the command is known to work before a GPU is at hand).
"""
