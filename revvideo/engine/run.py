"""`run(cfg)`: what tools/run_net.py does: prepare, train, multi-view test, tell the user where
everything is. A training run keeps its files in OUTPUT_DIR; every test writes its results into
a new folder, OUTPUT_DIR/test/<checkpoint stem>[-N] (revvideo.engine.evaluate)."""

import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path

import torch
from fvcore.common.config import CfgNode

from revvideo.checkpoint import (
    checkpoint_file,
    head_classes,
    load_model_state,
    read_checkpoint,
    stored_config,
    stored_temperature,
)
from revvideo.checkpoint.training import CHECKPOINT_DIR, latest_checkpoint
from revvideo.classes import (
    CLASSNAMES_FILE,
    ClassNames,
    dataset_class_names,
    first_names,
    match_classes,
    resolve_class_names,
    stored_class_names,
)
from revvideo.config.validate import check_choice, validate_config
from revvideo.data.build import check_data_config
from revvideo.data.loader import dead_loader_worker
from revvideo.data.paths import VideoList, read_video_entries, video_list_source
from revvideo.data.synthetic import ensure_synthetic_dataset
from revvideo.engine.distributed import (
    barrier,
    distributed_rank_and_world_size,
    init_distributed,
    is_main_process,
    shutdown_distributed,
)
from revvideo.engine.evaluate import CONFIG_FILE, multiview_test
from revvideo.engine.memory_fit import resolve_auto_settings
from revvideo.engine.metrics import ENSEMBLE_METHODS
from revvideo.engine.monitor import RunLog
from revvideo.engine.optim import OPTIMIZERS
from revvideo.engine.output_lock import output_dir_lock
from revvideo.engine.precision import MixedPrecision
from revvideo.engine.stopping import StopRequest
from revvideo.engine.train import Trainer, seed_everything
from revvideo.models import build_model
from revvideo.models.common import patch_grid
from revvideo.utils.errors import ConfigError, DataError, RunStopped, UserError
from revvideo.utils.files import written_whole

logger = logging.getLogger(__name__)

PREPARE_HINT = (
    "tools/prepare_kinetics.py makes them: `python tools/prepare_kinetics.py <folder> --videos "
    "<downloaded videos>`, then set DATA.PATH_TO_DATA_DIR to <folder>"
)


def run(cfg: CfgNode) -> int:
    """Trains (TRAIN.ENABLE) and tests (TEST.ENABLE) as `cfg` says; returns the exit status.

    0 when done; 128 + signal number when a signal stopped training or validation (its
    checkpoint saved); a signal in the test raises revvideo.utils.cli.Interrupted, with no
    results written. User mistakes raise UserError (one-line message); a data loader worker
    that died where the loader could not recover raises RunStopped. Works as one process or
    under torchrun.
    """
    device = init_distributed()
    try:
        tested = check_inputs(cfg)
        # Before the searches of GPU memory, so that they try the convolutions training runs.
        torch.backends.cudnn.benchmark = True
        if cfg.TRAIN.ENABLE:
            resolve_auto_settings(cfg, device, distributed_rank_and_world_size()[1])
        # The run's one model, built before anything is written; the same weights on every process.
        seed_everything(cfg.RNG_SEED)
        model = build_model(cfg)
        output_dir = Path(cfg.OUTPUT_DIR)
        with contextlib.ExitStack() as owned:
            if is_main_process():
                created = prepare_output_dir(output_dir)
                if created is not None:  # removed again if the run ends having written nothing
                    owned.callback(remove_empty_folders, output_dir, created)
                owned.enter_context(output_dir_lock(output_dir))
            # The other processes write too (loader state, logs): only once the run owns it.
            barrier()
            return train_and_test(cfg, device, model, tested)
    except RuntimeError as err:
        death = dead_loader_worker(err)
        if death is None:
            raise
        raise RunStopped(
            f"a data loader worker died ({death[1]}) while the model was running; the "
            "checkpoints in OUTPUT_DIR are kept and the same command resumes from the newest "
            "(if memory ran out, lower DATA_LOADER.NUM_WORKERS)"
        ) from err
    finally:
        shutdown_distributed()


def check_config(cfg: CfgNode, world_size: int = 1) -> None:
    """ConfigError (one line, naming the key) for a value a run cannot use: the schema's rules,
    the data pipeline's and the engine's; `world_size`: the processes that share
    TRAIN.BATCH_SIZE. The model's rules are checked when it is built (build_model)."""
    validate_config(cfg, world_size)
    check_data_config(cfg)
    check_choice("SOLVER.OPTIMIZING_METHOD", cfg.SOLVER.OPTIMIZING_METHOD.lower(), OPTIMIZERS)
    check_choice("DATA.ENSEMBLE_METHOD", cfg.DATA.ENSEMBLE_METHOD, ENSEMBLE_METHODS)


def check_inputs(cfg: CfgNode) -> tuple[Path, dict] | None:
    """Checks everything the run reads before it writes anything; returns the checkpoint to
    test (path, content) when the run only tests. Raises UserError (one line)."""
    check_config(cfg, world_size=distributed_rank_and_world_size()[1])
    if cfg.TRAIN.ENABLE:
        check_test_crop(cfg)
    prepare_data(cfg)
    tested = None
    if cfg.TEST.ENABLE and not cfg.TRAIN.ENABLE:
        tested = checkpoint_to_test(cfg)
    elif cfg.TEST.ENABLE and cfg.TEST.CHECKPOINT_FILE_PATH:
        checkpoint_to_test(cfg)  # tested after training: its file and clips checked before it
    resolve_num_classes(cfg, tested)
    if tested is not None:
        # The test would stop on classes that differ: better before anything is written.
        match_classes(
            resolve_class_names(cfg.MODEL.NUM_CLASSES, checkpoint=tested[1]),
            dataset_class_names(cfg.DATA.PATH_TO_DATA_DIR),
            shared_only=cfg.TEST.SHARED_CLASSES_ONLY,
        )
    if cfg.TRAIN.ENABLE and cfg.TRAIN.CHECKPOINT_FILE_PATH:
        checkpoint_file(cfg.TRAIN.CHECKPOINT_FILE_PATH, "TRAIN.CHECKPOINT_FILE_PATH")
    return tested


def train_and_test(
    cfg: CfgNode, device: torch.device, model: torch.nn.Module, tested: tuple[Path, dict] | None
) -> int:
    """The run itself, once its inputs are checked and it owns OUTPUT_DIR (see `run`)."""
    set_cpu_threads(cfg, device)
    checkpoint, steps, names, temperature = None, 0, None, None
    if cfg.TRAIN.ENABLE:
        trainer = Trainer(cfg, device, model)
    if cfg.TRAIN.ENABLE and is_main_process():
        # Once the run can start (a checkpoint it resumes fits): the config of its checkpoints.
        with written_whole(Path(cfg.OUTPUT_DIR) / CONFIG_FILE) as partial:
            partial.write_text(cfg.dump())
    if cfg.TRAIN.ENABLE:
        outcome = trainer.fit()
        if outcome.stop_signal is not None:
            return 128 + outcome.stop_signal
        checkpoint, temperature = outcome.checkpoint, outcome.temperature
        steps, names = trainer.schedule.step_count, trainer.class_names
    if cfg.TEST.ENABLE:
        if not cfg.TRAIN.ENABLE or cfg.TEST.CHECKPOINT_FILE_PATH:
            tested = tested or checkpoint_to_test(cfg)
            checkpoint, steps, names, temperature = load_tested(cfg, model, tested)
        test(cfg, model.to(device), device, checkpoint, steps, names, temperature)
    if is_main_process() and checkpoint is not None:
        logger.info("final checkpoint: %s", checkpoint)
        # The installed command where the run came from one (no demo/ folder outside a checkout).
        installed = Path(sys.argv[0]).name == "revvideo-train"
        classify = "revvideo-classify" if installed else "python demo/classify.py"
        logger.info("classify a video: %s <video> --checkpoint %s", classify, checkpoint)
    barrier()
    return 0


def set_cpu_threads(cfg: CfgNode, device: torch.device) -> None:
    """On the CPU, leaves one core to each loader worker (unless OMP_NUM_THREADS says otherwise):
    OpenMP threads that share cores with busy processes wait for each other at every operation,
    which can make training many times slower."""
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0))
        torch.set_num_threads(max(1, cores - cfg.DATA_LOADER.NUM_WORKERS))


def prepare_output_dir(output_dir: Path) -> Path | None:
    """Creates OUTPUT_DIR and checks that files can be written there (UserError if not);
    returns the outermost folder it created, None where OUTPUT_DIR was there."""
    created = next(
        (path for path in [*output_dir.parents[::-1], output_dir] if not path.exists()), None
    )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as err:
        raise UserError(f"OUTPUT_DIR {output_dir} is not writable: {err.strerror or err}") from None
    return created


def remove_empty_folders(folder: Path, top: Path) -> None:
    """Removes `folder`, then its parents up to `top`, while they are empty."""
    for path in [folder, *folder.parents]:
        try:
            path.rmdir()
        except OSError:
            return
        if path == top:
            return


def check_video_lists(cfg: CfgNode) -> None:
    """DataError, with the way to make them, when the lists this run needs are missing; one
    line naming the file, the video, its labels and lines when a list gives a video two labels.
    One warning each (main process) for videos listed twice with one label (they count twice),
    for classes without training videos (the model cannot learn them) and for videos in two
    splits."""
    splits = _splits(cfg)
    root = cfg.DATA.PATH_TO_DATA_DIR
    lists = ", ".join(f"{split}.csv" for split in splits)
    if not root:
        raise ConfigError(
            f"DATA.PATH_TO_DATA_DIR is not set: it must name the folder holding {lists}; "
            f"{PREPARE_HINT}"
        )
    for split in splits:
        if video_list_source(root, split) is None:
            raise DataError(
                f"{os.path.join(root, f'{split}.csv')} not found: DATA.PATH_TO_DATA_DIR must "
                f"hold {lists} (lines `path label`); {PREPARE_HINT}"
            )
    listed = {
        split: read_video_entries(root, split, cfg.DATA.PATH_PREFIX, cfg.DATA.PATH_LABEL_SEPARATOR)
        for split in splits
    }
    warnings = [videos.repeats_notice() for videos in listed.values()]
    if "train" in listed:
        warnings.append(_unlearned_classes_notice(cfg, listed["train"]))
    warnings += [_shared_videos_notice(listed[a], listed[b]) for a, b in _split_pairs(splits)]
    for warning in filter(None, warnings):
        if is_main_process():
            logger.warning("%s", warning)


def _split_pairs(splits: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(splits) for b in splits[i + 1 :]]


def _shared_videos_notice(first: VideoList, second: VideoList) -> str:
    """One line naming the videos that both lists hold, or "": a video trained on and then
    validated or tested on makes the score a measure of memory."""
    shared = sorted(
        {entry.path for entry in first.entries} & {entry.path for entry in second.entries}
    )
    if not shared:
        return ""
    return (
        f"{len(shared)} of the videos in {second.source} are also in {first.source}: "
        f"{first_names(shared, 3)}"
    )


def _unlearned_classes_notice(cfg: CfgNode, train: VideoList) -> str:
    """One line naming the classes of the dataset that no training video shows, or ""."""
    names = dataset_class_names(cfg.DATA.PATH_TO_DATA_DIR)
    count = len(names) if names else cfg.MODEL.NUM_CLASSES
    unseen = sorted(set(range(count)) - {entry.label for entry in train.entries})
    if not unseen:
        return ""
    if names:
        named = first_names([names[label] for label in unseen], 5)
    else:
        named = ", ".join(f"label {label}" for label in unseen[:5])
        named += ", ..." if len(unseen) > 5 else ""
    one = len(unseen) == 1
    return (
        f"{len(unseen)} of the {count} classes {'has' if one else 'have'} no video in "
        f"{train.source}, so the model cannot learn {'it' if one else 'them'}: {named}"
    )


def prepare_data(cfg: CfgNode) -> None:
    """Generates the synthetic dataset where the config asks for it, then checks that the
    video lists this run needs exist (DataError naming them and how to make them)."""
    if cfg.DATA.GENERATE_SYNTHETIC and cfg.DATA.PATH_TO_DATA_DIR:
        root = cfg.DATA.PATH_TO_DATA_DIR
        try:
            # Every process calls it: a file lock lets one generate while the others wait.
            generated = ensure_synthetic_dataset(root)
        except DataError:
            # Another dataset is there: evaluating or training on it is what the user wants,
            # provided it lists the videos this run needs.
            if any(video_list_source(root, split) is None for split in _splits(cfg)):
                raise
            logger.info(
                "%s holds a dataset that is not the synthetic one: using its video lists "
                "(DATA.GENERATE_SYNTHETIC generates only into an empty or missing folder)",
                root,
            )
        else:
            logger.info(
                "synthetic dataset: %s (%s)", root, "generated" if generated else "already there"
            )
    check_video_lists(cfg)


def _splits(cfg: CfgNode) -> list[str]:
    return (["train", "val"] if cfg.TRAIN.ENABLE else []) + (["test"] if cfg.TEST.ENABLE else [])


def resolve_num_classes(cfg: CfgNode, tested: tuple[Path, dict] | None) -> None:
    """Sets MODEL.NUM_CLASSES when the config leaves it to the data (0): the training
    dataset's class count, or the tested checkpoint's. ConfigError when an explicit count
    disagrees with the training dataset's class names or the tested checkpoint's head."""
    root = cfg.DATA.PATH_TO_DATA_DIR
    names = dataset_class_names(root)
    count = cfg.MODEL.NUM_CLASSES
    if cfg.TRAIN.ENABLE:
        if count == 0 and names is None:
            raise ConfigError(
                f"MODEL.NUM_CLASSES is 0 (the dataset's number of classes) but {root} names no "
                f"classes (no {CLASSNAMES_FILE}, no class folders): set MODEL.NUM_CLASSES"
            )
        if count and names is not None and count != len(names):
            raise ConfigError(
                f"MODEL.NUM_CLASSES is {count} but the dataset in {root} has {len(names)} "
                f"classes ({first_names(names)}); set it to {len(names)}, or to 0 to "
                "follow the dataset"
            )
        if count == 0:
            cfg.MODEL.NUM_CLASSES = len(names)
    elif tested is not None:
        path, checkpoint = tested
        classes = head_classes(checkpoint)
        if count == 0 and classes is None:
            raise ConfigError(f"cannot tell how many classes {path} scores: set MODEL.NUM_CLASSES")
        if count and classes is not None and count != classes:
            named = stored_class_names(checkpoint)
            raise ConfigError(
                f"MODEL.NUM_CLASSES is {count} but {path} scores {classes} classes"
                f"{f' ({first_names(named)})' if named else ''}: set it to 0 (the checkpoint's) "
                f"or {classes}"
            )
        cfg.MODEL.NUM_CLASSES = classes or count


def checkpoint_to_test(cfg: CfgNode) -> tuple[Path, dict]:
    """TEST.CHECKPOINT_FILE_PATH (a file, a release name or a training run's OUTPUT_DIR: see
    checkpoint_file), or else the run's newest checkpoint, read and checked against the clips
    this run tests (check_clip_size)."""
    source = cfg.TEST.CHECKPOINT_FILE_PATH
    if source:
        path = checkpoint_file(source, "TEST.CHECKPOINT_FILE_PATH")
    else:
        path = latest_checkpoint(cfg.OUTPUT_DIR)
    if path is None:
        raise ConfigError(
            f"nothing to test: no checkpoint in {Path(cfg.OUTPUT_DIR) / CHECKPOINT_DIR}; set "
            "TEST.CHECKPOINT_FILE_PATH, or train first (TRAIN.ENABLE True)"
        )
    checkpoint = read_checkpoint(path)
    check_clip_size(cfg, path, checkpoint)
    return path, checkpoint


def _clip_size(cfg: CfgNode) -> dict[str, int]:
    """The keys that size the clips of a model, with their values."""
    data = cfg.DATA
    return {
        "DATA.NUM_FRAMES": data.NUM_FRAMES,
        "DATA.TRAIN_CROP_SIZE": data.TRAIN_CROP_SIZE,
        "DATA.TEST_CROP_SIZE": data.TEST_CROP_SIZE,
    }


def _clips(size: dict[str, int], crop_key: str) -> str:
    """Frames x height x width, e.g. 16x224x224."""
    return f"{size['DATA.NUM_FRAMES']}x{size[crop_key]}x{size[crop_key]}"


def _key_values(size: dict[str, int], keys: list[str]) -> str:
    return ", ".join(f"{key} {size[key]}" for key in keys)


def check_test_crop(cfg: CfgNode) -> None:
    """The crops a model is validated and tested on while it trains; ConfigError (one line,
    naming the keys) for another, checked before anything is written.

    The rule: DATA.TEST_CROP_SIZE gives the model the token grid of DATA.TRAIN_CROP_SIZE (the
    grid its position embeddings are laid out for, so that they are used as trained), or lies
    within the training scales, DATA.TRAIN_JITTER_SCALES (training resizes frames' short side
    into that range before cropping; without DATA.TRAIN_JITTER_SCALES_RELATIVE): frames at a
    scale the model was trained on, PySlowFast's test at 256 of a model trained on 224 crops
    of frames scaled to [256, 320]. The model takes those crops by resizing its position
    embeddings (revvideo.models.common.position_embedding), as it would any other: a crop far
    from the training grid would measure a model it never was, at a cost growing with the
    square of its tokens. A checkpoint is later tested on its training crop or this one
    (check_clip_size)."""
    data = cfg.DATA
    train, test = data.TRAIN_CROP_SIZE, data.TEST_CROP_SIZE
    scales = None if data.TRAIN_JITTER_SCALES_RELATIVE else list(data.TRAIN_JITTER_SCALES)
    if _token_grid(cfg, test) == _token_grid(cfg, train):
        return
    if scales is not None and scales[0] <= test <= scales[1]:
        return
    within = f", or to a size within DATA.TRAIN_JITTER_SCALES {scales}" if scales else ""
    raise ConfigError(
        f"DATA.TEST_CROP_SIZE {test} for validation and test of a model trained on "
        f"DATA.TRAIN_CROP_SIZE {train} crops: set DATA.TEST_CROP_SIZE to {train}{within} (its "
        "position embeddings are laid out for the training crop; fine-tune at another size "
        "with TRAIN.CHECKPOINT_FILE_PATH)"
    )


def _token_grid(cfg: CfgNode, crop: int) -> tuple[int, int]:
    """The (height, width) of the token grid the patch embedding makes of `crop` pixels."""
    mvit = cfg.MVIT
    kernel, stride, padding = (
        list(values)[-2:] for values in (mvit.PATCH_KERNEL, mvit.PATCH_STRIDE, mvit.PATCH_PADDING)
    )
    _, height, width = patch_grid((1, crop, crop), [1, *kernel], [1, *stride], [0, *padding])
    return height, width


def check_clip_size(cfg: CfgNode, path: Path, checkpoint: dict) -> None:
    """ConfigError naming the keys whose values differ from the config stored in `checkpoint`,
    when this run would test it on clips of another size than it was trained and tested on.
    Its position embeddings are laid out for its training clips: with another training size
    they do not load, and another test size would resize them, so that the test no longer
    measures the checkpoint as it was trained (fine-tuning, TRAIN.CHECKPOINT_FILE_PATH, is what
    adapts it to other clips). A checkpoint without a revvideo config (a PySlowFast release,
    bare weights) has only its weights checked, when they are loaded."""
    try:
        stored = stored_config(checkpoint, path)
    except ConfigError:
        return  # PySlowFast's config: its keys are not ours
    if stored is None:
        return
    trained, tested = _clip_size(stored), _clip_size(cfg)
    # Testing at the training crop is testing the model as trained, whatever its own test crop.
    crop_size_trained = (trained["DATA.TEST_CROP_SIZE"], trained["DATA.TRAIN_CROP_SIZE"])
    differ = [
        key
        for key in trained
        if tested[key] != trained[key]
        and not (key == "DATA.TEST_CROP_SIZE" and tested[key] in crop_size_trained)
    ]
    if not differ:
        return
    trained_on = _clips(trained, "DATA.TRAIN_CROP_SIZE")
    tested_on = _clips(trained, "DATA.TEST_CROP_SIZE")
    also_tested = f" and tested on {tested_on}" if tested_on != trained_on else ""
    raise ConfigError(
        f"{path} was trained on {trained_on} clips{also_tested} "
        f"({_key_values(trained, list(trained))}); this run tests "
        f"{_clips(tested, 'DATA.TEST_CROP_SIZE')} clips with {_key_values(tested, differ)}: set "
        f"{_key_values(trained, differ)} (a test takes the clips the checkpoint was trained for; "
        "fine-tuning it with TRAIN.CHECKPOINT_FILE_PATH adapts it to others)"
    )


def load_tested(
    cfg: CfgNode, model: torch.nn.Module, tested: tuple[Path, dict]
) -> tuple[Path, int, ClassNames, float | None]:
    """Loads the weights of `tested` (path, checkpoint) into `model`; returns its path, the
    optimizer steps behind it (0 when it does not say), its class names and its temperature
    (None when it has none)."""
    path, checkpoint = tested
    extra = load_model_state(model, checkpoint, path)
    logger.info("testing %s", path)
    steps = extra.get("scheduler_state", {}).get("step_count", 0)
    names = resolve_class_names(cfg.MODEL.NUM_CLASSES, checkpoint=extra)
    return path, int(steps), names, stored_temperature(extra, path)


def test(
    cfg: CfgNode,
    model: torch.nn.Module,
    device: torch.device,
    checkpoint: Path,
    steps: int,
    class_names: ClassNames,
    temperature: float | None,
) -> None:
    """Runs the multi-view test (its files in a new folder: revvideo.engine.evaluate) with the
    checkpoint's `temperature` (None: uncalibrated, 1) and records it in OUTPUT_DIR/log.jsonl
    (at `steps`). A stop request ends it with Interrupted before anything is written; one that
    comes as the files are written lets them be written, and the run ends with them."""
    precision = MixedPrecision(cfg.TRAIN.MIXED_PRECISION, device)
    with StopRequest() as stop:
        results = multiview_test(
            cfg, model, device, precision, checkpoint=str(checkpoint), class_names=class_names,
            stop=stop, temperature=1.0 if temperature is None else temperature,
        )  # fmt: skip
        with stop.held():
            log = RunLog(cfg.OUTPUT_DIR, resume_step=None, enabled=is_main_process())
            scalars = ("top1_acc", "top5_acc", "mean_class_acc", "num_videos", "num_unscored")
            log.write("test", steps, **{key: results[key] for key in scalars})
            log.close()
    if stop.requested:
        logger.info("stopped by %s as the test results were written: they are complete", stop.name)
