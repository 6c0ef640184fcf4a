"""The method's fixed numbers, each defined once (docs/method.md gives the sections)."""

SIZE_MULTIPLE = 32  # five 2x2 poolings: image sides inside the networks are multiples of 32 (section 2)
TEACHER_PAD = 16  # the teacher's inference and RD's targets reflect-pad the image by 16 (sections 4 and 5)
TRAIN_SHIFT = 5  # shift factor of both APR teacher calls: a 9-pixel hole (section 3)
INFER_SHIFT = 1  # shift factor of the teacher at inference: a 1-pixel hole (section 5)
