"""Video and image models: a typed builder such as `rev_mvit_b_16x4(num_classes=400)`, or
`build_model(cfg)` from a config. All map `(B, 3, T, H, W)` clips to `(B, classes)` logits;
the image models (`rev_mvit_b_imagenet`, `rev_vit_*(num_frames=1)`) also take `(B, 3, H, W)`."""

from revvideo.models.build import TrainedModel, build_model, load_trained
from revvideo.models.mvit import MViT
from revvideo.models.rev_mvit import RevMViT
from revvideo.models.zoo import (
    mvit_b_16x4,
    rev_mvit_b_16x4,
    rev_mvit_b_imagenet,
    rev_vit_b,
    rev_vit_l,
    rev_vit_s,
)

__all__ = [
    "MViT",
    "RevMViT",
    "TrainedModel",
    "build_model",
    "load_trained",
    "mvit_b_16x4",
    "rev_mvit_b_16x4",
    "rev_mvit_b_imagenet",
    "rev_vit_b",
    "rev_vit_l",
    "rev_vit_s",
]
