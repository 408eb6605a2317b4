"""Mixed precision (TRAIN.MIXED_PRECISION): the autocast dtype and the gradient scaler."""

import torch


class MixedPrecision:
    """Autocast settings for `device`.

    Enabled: bf16 on the CPU and on CUDA devices that support it (same range as float32, so no
    loss scaling), fp16 with a `GradScaler` on older GPUs. Disabled: float32 and a no-op scaler.
    The scaler is always present so the train step reads the same either way.
    """

    def __init__(self, enabled: bool, device: torch.device) -> None:
        self.device_type = device.type
        if not enabled:
            self.dtype = None
        elif device.type == "cuda" and not torch.cuda.is_bf16_supported():
            self.dtype = torch.float16
        else:
            self.dtype = torch.bfloat16
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        )

    def __str__(self) -> str:
        if self.dtype is None:
            return "float32"
        name = str(self.dtype).removeprefix("torch.")
        return f"{name} autocast" + (" with a gradient scaler" if self.scaler.is_enabled() else "")
