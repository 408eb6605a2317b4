"""The model artifact: one home for reading, writing and inspecting checkpoints.

A revvideo checkpoint holds the weights (`"model_state"`, PySlowFast's parameter names), the
config the model was built with (`"cfg"`), its label space (`"class_names"`, by output index)
and its provenance (`"provenance"`: source, epoch, optimizer step); a training checkpoint adds
the optimizer, schedule, scaler and generator states. The same functions read PySlowFast
`.pyth` files, torchvision state dicts and the released weights by name.

- files: atomic writes, every layout read, strict and fine-tuning loads, the stored config;
- releases: published checkpoints by name (`rev_mvit_b_16x4_k400`) and builders' `weights=`;
- training: epoch checkpoints of a run and the whole training state.

It knows no model class: models sit above it (their builders load `weights=` through it), and
layout conversion, which builds models, is the convert_checkpoint command's
(`revvideo.cli._conversion`).

A model's class names are resolved by `revvideo.classes.resolve_class_names`.
"""

from revvideo.checkpoint.files import (
    MODEL_STATE,
    add_entries,
    from_torchvision_mvit,
    head_classes,
    load_checkpoint,
    load_fine_tuning_state,
    load_model_state,
    model_entries,
    read_checkpoint,
    read_model_checkpoint,
    save_checkpoint,
    stored_config,
    stored_temperature,
)
from revvideo.checkpoint.releases import (
    RELEASES,
    Release,
    checkpoint_file,
    fetch_release,
    find_release,
    load_weights,
)

__all__ = [
    "MODEL_STATE",
    "RELEASES",
    "Release",
    "add_entries",
    "checkpoint_file",
    "fetch_release",
    "find_release",
    "from_torchvision_mvit",
    "head_classes",
    "load_checkpoint",
    "load_fine_tuning_state",
    "load_model_state",
    "load_weights",
    "model_entries",
    "read_checkpoint",
    "read_model_checkpoint",
    "save_checkpoint",
    "stored_config",
    "stored_temperature",
]
