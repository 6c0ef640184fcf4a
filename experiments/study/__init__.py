"""The results study (issue 8): fully self-supervised training on the noisy photos of a real
set, compared with the noisy input, blind CBM3D, a plain blind-spot baseline and the official
student; run with ``python -m experiments.study``."""
