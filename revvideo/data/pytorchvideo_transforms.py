"""pytorchvideo.transforms, importable next to torchvision 0.29.

pytorchvideo 0.1.5 (the newest release) imports `torchvision.transforms.functional_tensor`, which
torchvision renamed to `_functional_tensor`; the old name is aliased before the import.
"""

import sys
import warnings

import torchvision.transforms._functional_tensor as _functional_tensor

sys.modules.setdefault("torchvision.transforms.functional_tensor", _functional_tensor)

with warnings.catch_warnings():
    # pytorchvideo 0.1.5 still decorates methods with the deprecated torch.jit.script_method.
    warnings.filterwarnings("ignore", message=".*script_method.*", category=FutureWarning)
    from pytorchvideo.transforms import CutMix, MixUp, RandAugment
    from pytorchvideo.transforms.functional import convert_to_one_hot

__all__ = ["CutMix", "MixUp", "RandAugment", "convert_to_one_hot"]
