"""Data: image files, dataset formats, the prepared store and its sampler."""
