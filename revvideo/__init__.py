"""revvideo: Reversible Vision Transformers (Rev-MViT, Rev-ViT) for video classification."""

__version__ = "0.1.0"
