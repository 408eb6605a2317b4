"""Test views for a GPU: uint8 from the loader, normalised on the device."""

import pytest
import torch

from revvideo.data.transforms import MultiViewCrops, Normalize

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("pinned", [False, True], ids=["pageable", "pinned"])
@pytest.mark.parametrize("crops", [1, 3])
def test_uint8_views_normalised_on_the_gpu_equal_views_normalised_in_the_loader(crops, pinned):
    # Short side 32 (the crop), long side 50: three crops overlap; per-channel statistics.
    frames = torch.randint(0, 256, (6, 32, 50, 3), dtype=torch.uint8)
    normalize = Normalize([0.43, 0.45, 0.47], [0.22, 0.225, 0.23])
    rows = [[0, 1, 2], [3, 4, 5]]
    on_cpu = MultiViewCrops(32, crops, normalize)(frames, rows)
    pixels = MultiViewCrops(32, crops)(frames, rows)
    if pinned:  # as the loader hands them over with DATA_LOADER.PIN_MEMORY
        pixels = pixels.pin_memory()
    on_gpu = normalize.model_input(pixels, torch.device("cuda"))
    assert (on_gpu.device.type, on_gpu.dtype, on_gpu.shape) == ("cuda", torch.float32, on_cpu.shape)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-6, rtol=0)
