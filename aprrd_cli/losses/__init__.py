"""The losses of the method: L_APR with the Adjacent Pixel Replacer (``apr``), Recharged
Distillation's targets and L_RD (``rd``), and the plain blind-spot loss that APR replaces
(``blind_spot``, the study's baseline)."""
