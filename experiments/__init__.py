"""Research code behind docs/results.md, outside the installed package: the study of fully
self-supervised training on real photos (``experiments.study``), run by ``make results``."""
