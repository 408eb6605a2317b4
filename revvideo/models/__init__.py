"""Video and image models: `build_model(cfg)` from a config, or a typed builder such as
`rev_mvit_b_16x4(num_classes=400)`. All map `(B, 3, T, H, W)` clips to `(B, classes)` logits;
the image models (`rev_mvit_b_imagenet`, `rev_vit_*(num_frames=1)`) also take `(B, 3, H, W)`."""

from revvideo.models.build import MODEL_REGISTRY, build_model
from revvideo.models.mvit import MViT, mvit_b_16x4
from revvideo.models.rev_mvit import RevMViT, rev_mvit_b_16x4, rev_mvit_b_imagenet
from revvideo.models.rev_vit import rev_vit_b, rev_vit_l, rev_vit_s

__all__ = [
    "MODEL_REGISTRY",
    "MViT",
    "RevMViT",
    "build_model",
    "mvit_b_16x4",
    "rev_mvit_b_16x4",
    "rev_mvit_b_imagenet",
    "rev_vit_b",
    "rev_vit_l",
    "rev_vit_s",
]
