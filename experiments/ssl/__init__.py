"""Self-supervised pretraining and frozen-feature evaluation shared by the studies.

Nothing here knows about a particular kind of data: inputs are float tensors ``(B, C, H, W)`` with any number of
channels, labels are integer classes (k-NN, linear probe) or real targets (ridge probe).

- :mod:`experiments.ssl.augment`: batched multi-crop augmentation (random resized crops, flips, photometric jitter).
- :mod:`experiments.ssl.dino`: a DINO-style LightningModule (student/teacher EMA, centring + sharpening, KoLeo).
- :mod:`experiments.ssl.evaluate`: feature extraction, k-NN, linear and ridge probes on frozen features.
- :mod:`experiments.ssl.training`: a Lightning fit that SIGTERM stops with a non-zero exit status.
"""
