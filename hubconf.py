"""revvideo's models for `torch.hub.load`.

    model = torch.hub.load("<owner>/revvideo", "rev_mvit_b_16x4", weights="rev_mvit_b_16x4_k400")
    model = torch.hub.load("path/to/revvideo", "mvit_b_16x4", source="local", weights="w.pyth")

`weights` is a checkpoint path or a release name (revvideo.checkpoint.releases.RELEASES); other
keyword arguments go to the builder (e.g. num_classes, num_frames). Models map
`(B, 3, T, H, W)` clips to `(B, classes)` logits.
"""

dependencies = ["torch", "torchvision", "pytorchvideo", "av", "fvcore", "yaml"]

from revvideo.models import mvit_b_16x4, rev_mvit_b_16x4, rev_vit_b, rev_vit_s  # noqa: E402

__all__ = ["mvit_b_16x4", "rev_mvit_b_16x4", "rev_vit_b", "rev_vit_s"]
