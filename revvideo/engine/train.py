"""The training loop: mixed precision, gradient accumulation, DDP, checkpoints, resume, signals.

Determinism: the initial weights come from RNG_SEED on every process; each process then draws
from RNG_SEED + rank (dropout, drop path, mixup). The training order is a function of the epoch
(the loader's DistributedSampler), and each video's clip and augmentation a function of
(RNG_SEED, epoch, video), whichever loader worker makes it. So restoring every process's
generator states reproduces the rest of the run exactly, from an epoch's end or from the middle
of one: a run killed and resumed from its last checkpoint, or stopped by a signal and resumed,
ends with the same weights as one never stopped.

Checkpoints: every TRAIN.CHECKPOINT_PERIOD epochs and after the last, with checkpoints/last.pyth
(the newest model) beside them, and best.pyth whenever validation finds the best top-1 so far
(ties: the later). After the last epoch's validation, a temperature fitted to the validation
logits (by NLL) is stored in the final checkpoint, last.pyth and best.pyth.

Stopping: SIGTERM or SIGINT (Ctrl-C) lets the current optimizer step finish, saves a
checkpoint (mid-epoch if need be; resuming skips the batches already trained on) and ends the
run with exit status 128 + the signal's number (143, 130), like a shell; a second Ctrl-C aborts
at once (revvideo.engine.stopping). During validation, the batch at hand finishes: the epoch is
trained, so it is logged without a validation top-1 and its checkpoint saved, and the run ends
the same way; resuming goes on with the next epoch. A non-finite loss stops the run before the
optimizer step, with NonFiniteLossError and the checkpoints untouched.
"""

import contextlib
import itertools
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from revvideo.checkpoint import (
    add_entries,
    checkpoint_file,
    load_fine_tuning_state,
    read_checkpoint,
    stored_config,
)
from revvideo.checkpoint.training import (
    BEST_MODEL,
    LAST_MODEL,
    checkpoint_path,
    latest_checkpoint,
    load_training_state,
    model_path,
    remove_mid_epoch_checkpoints,
    rng_state,
    save_model,
    save_training_state,
    set_rng_state,
)
from revvideo.classes import (
    first_names,
    normalized_name,
    resolve_class_names,
    stored_class_names,
)
from revvideo.data import SoftTargets, build_loader
from revvideo.data.dataset import class_counts
from revvideo.engine.distributed import (
    all_gather_objects,
    all_reduce,
    distributed_rank_and_world_size,
    is_main_process,
)
from revvideo.engine.evaluate import small_split_warning, validate, validation_logits
from revvideo.engine.metrics import fit_temperature
from revvideo.engine.monitor import RunLog, format_duration, progress_bar, read_log
from revvideo.engine.optim import WarmupCosineSchedule, build_optimizer
from revvideo.engine.plots import plot_curves
from revvideo.engine.precision import MixedPrecision
from revvideo.engine.stopping import StopRequest
from revvideo.models.levers import compile_branches
from revvideo.utils.errors import CheckpointError, ConfigError, DataError, UserError
from revvideo.utils.files import written_whole

logger = logging.getLogger(__name__)

CURVES_FILE = "curves.png"


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite: training diverged (often a learning rate too high)."""


def soft_target_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over the batch of -sum_c weight_c target_c log softmax(logits)_c; logits and target
    (B, C), target rows summing to 1 (mixup / label smoothing); weight (C,), None for all 1."""
    if weight is not None:
        target = target * weight
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """(C,) float32 for the videos of each of C classes, `counts`: N / (K * n_k) for a class
    with n_k of the N videos, K the classes that have any; 0 for a class without one. Each
    class then weighs as much in the loss, and a video 1 on average (the loss keeps its scale)."""
    videos = torch.tensor(counts, dtype=torch.float32)
    present = videos > 0
    weights = torch.zeros_like(videos)
    weights[present] = videos.sum() / (present.sum() * videos[present])
    return weights


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _global_batch(train: CfgNode) -> str:
    """Videos per optimizer step and the keys that make it, e.g. "8 (TRAIN.BATCH_SIZE 4 x
    TRAIN.ACCUMULATION_STEPS 2)"."""
    return (
        f"{train.BATCH_SIZE * train.ACCUMULATION_STEPS} (TRAIN.BATCH_SIZE {train.BATCH_SIZE} x "
        f"TRAIN.ACCUMULATION_STEPS {train.ACCUMULATION_STEPS})"
    )


@dataclass
class TrainingOutcome:
    """How training ended: `stop_signal` is the signal that stopped it early, if any;
    `temperature` the one fitted for `checkpoint`'s weights (None where none was)."""

    checkpoint: Path | None
    stop_signal: int | None
    temperature: float | None = None


class Trainer:
    """Trains `model` (`build_model(cfg)`, seeded with RNG_SEED on every process) for
    SOLVER.MAX_EPOCH epochs on the train split (see module doc).

    Construction builds loaders, optimizer and schedule, and resumes from the newest checkpoint
    in OUTPUT_DIR/checkpoints (TRAIN.AUTO_RESUME) or loads TRAIN.CHECKPOINT_FILE_PATH.
    """

    def __init__(self, cfg: CfgNode, device: torch.device, model: nn.Module) -> None:
        self.cfg = cfg
        self.device = device
        self.output_dir = Path(cfg.OUTPUT_DIR)
        self.rank, self.world_size = distributed_rank_and_world_size()
        self.main = is_main_process()
        self.accumulation = cfg.TRAIN.ACCUMULATION_STEPS
        self.max_epoch = cfg.SOLVER.MAX_EPOCH
        self.precision = MixedPrecision(cfg.TRAIN.MIXED_PRECISION, device)

        self.model = model.to(device)
        if cfg.MODEL.COMPILE:
            compile_branches(self.model)
        self.train_loader = build_loader(cfg, "train")
        self.val_loader = build_loader(cfg, "val", views_for_gpu=device.type == "cuda")
        self.steps_per_epoch = len(self.train_loader) // self.accumulation
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"an epoch has {len(self.train_loader)} batches of TRAIN.BATCH_SIZE "
                f"{cfg.TRAIN.BATCH_SIZE}, fewer than TRAIN.ACCUMULATION_STEPS "
                f"{self.accumulation}: no optimizer step"
            )
        self.optimizer = build_optimizer(self.model, cfg)
        self.schedule = WarmupCosineSchedule.from_cfg(self.optimizer, cfg, self.steps_per_epoch)
        self.soft_targets = SoftTargets.from_cfg(cfg)
        self.class_weights = self._class_weights()
        self.class_names = resolve_class_names(
            cfg.MODEL.NUM_CLASSES, data_dir=cfg.DATA.PATH_TO_DATA_DIR
        )
        # Where the weights started from, for the checkpoints' provenance.
        self.source = "scratch"
        self.epochs_done = 0
        self.epoch_steps_done = 0
        self.last_checkpoint: Path | None = None
        # The best validation top-1 so far (best.pyth's), and the temperature fitted for the
        # current weights at the end of training.
        self.best_val_top1: float | None = None
        self.temperature: float | None = None
        random_state = self._resume_or_start()
        self.train_model: nn.Module = self.model
        if self.world_size > 1:
            # Gradients live in DDP's all-reduce buckets instead of beside them: one copy of
            # the parameters' size less, and the memory searches before training see no DDP.
            self.train_model = DistributedDataParallel(
                self.model,
                device_ids=[device] if device.type == "cuda" else None,
                gradient_as_bucket_view=True,
            )
        self.log = RunLog(self.output_dir, resume_step=self.schedule.step_count, enabled=self.main)
        self._started = time.perf_counter()
        self._steps_this_session = 0
        # Last, so that nothing set up after it draws from the generators before training does.
        if isinstance(random_state, dict):
            set_rng_state(random_state)
        else:
            seed_everything(random_state)

    def _resume_or_start(self) -> dict | int:
        """Loads the state to start from; returns the generator states to restore, or a seed."""
        checkpoint = latest_checkpoint(self.output_dir) if self.cfg.TRAIN.AUTO_RESUME else None
        if checkpoint is None:
            if self.cfg.TRAIN.CHECKPOINT_FILE_PATH:
                self._load_initial_weights(self.cfg.TRAIN.CHECKPOINT_FILE_PATH)
            return self.cfg.RNG_SEED + self.rank
        try:
            state = load_training_state(
                checkpoint, self.model, self.optimizer, self.schedule, self.precision.scaler
            )
        except CheckpointError as err:
            raise CheckpointError(
                f"{self.output_dir} holds a run to resume (TRAIN.AUTO_RESUME), and {err}; "
                "train into another OUTPUT_DIR to start afresh (TRAIN.CHECKPOINT_FILE_PATH "
                "counts only where there is nothing to resume)"
            ) from None
        self._check_resumed_classes(checkpoint, stored_class_names(state))
        self._check_resumed_steps_per_epoch(checkpoint, state)
        self.source = (state.get("provenance") or {}).get("source", self.source)
        self.epochs_done, self.epoch_steps_done = state["epoch"], state["epoch_step"]
        self.best_val_top1 = state.get("best_val_top1")
        self.temperature = state.get("temperature")
        self.last_checkpoint = checkpoint
        logger.info(
            "resuming from %s (epoch %d, step %d)",
            checkpoint,
            self.epochs_done + 1,
            self.schedule.step_count,
        )
        rng_states = state["rng_states"]
        if len(rng_states) == self.world_size:
            return rng_states[self.rank]
        logger.warning(
            "%s was written by %d processes, this run has %d: training continues, but not with "
            "the data order and augmentation an uninterrupted run would have had",
            checkpoint,
            len(rng_states),
            self.world_size,
        )
        return self.cfg.RNG_SEED + self.rank + 1000 * self.schedule.step_count

    def _check_resumed_classes(self, checkpoint: Path, trained: list[str] | None) -> None:
        """DataError where the run's checkpoint names other classes, or the same in another
        order, than the dataset: training on would teach its head other labels."""
        dataset = self.class_names
        if trained is None or not dataset.named:
            return
        trained_keys = [normalized_name(name) for name in trained]
        dataset_keys = [normalized_name(name) for name in dataset.names]
        if trained_keys == dataset_keys:
            return
        same = sorted(trained_keys) == sorted(dataset_keys)
        raise DataError(
            f"{checkpoint} was trained on the classes {first_names(trained)}, and "
            f"{self.cfg.DATA.PATH_TO_DATA_DIR} has {first_names(dataset.names)}"
            f"{' (the same classes in another order)' if same else ''}: resuming would train "
            "its head on other labels; train into another OUTPUT_DIR (with TRAIN."
            f"CHECKPOINT_FILE_PATH {checkpoint} to start from its weights, its head's rows "
            "kept by class name)"
        )

    def _check_resumed_steps_per_epoch(self, checkpoint: Path, state: dict) -> None:
        """ConfigError where this config's epochs have other optimizer steps than the run's
        (another global batch, training set or process count): the schedule counts steps and
        would no longer follow the epochs, and a half-done epoch would be cut elsewhere."""
        trained = state.get("steps_per_epoch")
        nothing_to_train = state["epoch"] >= self.max_epoch
        if trained is None or trained == self.steps_per_epoch or nothing_to_train:
            return
        then, now = stored_config(state, checkpoint).TRAIN, self.cfg.TRAIN
        if (then.BATCH_SIZE, then.ACCUMULATION_STEPS) != (now.BATCH_SIZE, now.ACCUMULATION_STEPS):
            change = (
                f"steps of a global batch of {_global_batch(then)}; this config has "
                f"{self.steps_per_epoch} of {_global_batch(now)}"
            )
            remedy = (
                "set the batch back (or split the same global batch otherwise, e.g. half the "
                "TRAIN.BATCH_SIZE and twice the TRAIN.ACCUMULATION_STEPS; with TRAIN.BATCH_SIZE "
                "auto, whose memory search chose this batch, set both numbers)"
            )
        else:
            change = (
                f"steps; this config has {self.steps_per_epoch} ({len(self.train_loader.dataset)} "
                f"training videos on {self.world_size} process(es))"
            )
            remedy = "train on the same videos with as many processes"
        raise ConfigError(
            f"{checkpoint} was trained with epochs of {trained} {change}, and the learning-rate "
            f"schedule would no longer follow the epochs: {remedy}, or train into another "
            f"OUTPUT_DIR with TRAIN.CHECKPOINT_FILE_PATH {checkpoint} to start a new schedule "
            "from its weights"
        )

    def _class_weights(self) -> torch.Tensor | None:
        """The training loss's class weights (balanced_class_weights of the training videos per
        class) with DATA.CLASS_BALANCE loss, else None."""
        if self.cfg.DATA.CLASS_BALANCE != "loss":
            return None
        weights = balanced_class_weights(class_counts(self.train_loader.dataset))
        present = weights[weights > 0]
        logger.info(
            "class-weighted loss (DATA.CLASS_BALANCE loss): a class weighs %.3g to %.3g, more "
            "where it has fewer training videos",
            present.min(),
            present.max(),
        )
        return weights.to(self.device)

    def _load_initial_weights(self, source: str) -> None:
        """Fine-tuning: the weights of `source` (a file or a release name) that fit the model,
        the head's rows by class name; one line says what did not fit as it was (the head's
        classes kept, new and dropped, resized position embeddings)."""
        path = checkpoint_file(source, "TRAIN.CHECKPOINT_FILE_PATH")
        changes = load_fine_tuning_state(
            self.model, read_checkpoint(path), path, class_names=self.class_names
        )
        self.source = source
        logger.info("initial weights: %s%s", source, f" ({'; '.join(changes)})" if changes else "")

    def fit(self) -> TrainingOutcome:
        """Trains until SOLVER.MAX_EPOCH or a stop signal; writes checkpoints and curves."""
        cfg = self.cfg
        if self.epochs_done >= self.max_epoch:
            logger.info(
                "nothing to train: %s already holds all %d epochs (SOLVER.MAX_EPOCH); raise "
                "SOLVER.MAX_EPOCH to train on, or use another OUTPUT_DIR to start afresh",
                self.last_checkpoint,
                self.max_epoch,
            )
            self.log.close()
            return TrainingOutcome(self.last_checkpoint, None, self.temperature)
        # Fitted anew for the weights this training ends with.
        self.temperature = None
        logger.info(
            "training %s (%s parameters) for epochs %d-%d on %d process(es), %s: %d steps of %d "
            "videos per epoch, %s",
            type(self.model).__name__,
            f"{sum(p.numel() for p in self.model.parameters()):,}",
            self.epochs_done + 1,
            self.max_epoch,
            self.world_size,
            self.device,
            self.steps_per_epoch,
            # A batch larger than the training set holds the whole set, once.
            min(cfg.TRAIN.BATCH_SIZE, len(self.train_loader.dataset)) * self.accumulation,
            self.precision,
        )
        try:
            with StopRequest() as stop:
                for epoch in range(self.epochs_done, self.max_epoch):
                    epoch_stats = self._train_epoch(epoch, stop)
                    if self.epoch_steps_done == self.steps_per_epoch:
                        self._end_epoch(epoch, epoch_stats, stop)
                    if self._agree_to_stop(stop):
                        self._save_checkpoint()
                        logger.info("stopped by %s; resume with the same command", stop.name)
                        return TrainingOutcome(self.last_checkpoint, stop.signal_number)
        finally:
            self.log.close()
        return TrainingOutcome(self.last_checkpoint, None, self.temperature)

    def _agree_to_stop(self, stop: StopRequest) -> bool:
        """Whether any process received a stop signal (all processes get the same answer)."""
        flag = torch.tensor([float(stop.requested)], device=self.device)
        return stop.agree(all_reduce(flag).item() > 0)

    def _train_epoch(self, epoch: int, stop: StopRequest) -> dict[str, float]:
        """Trains the steps of `epoch` not done yet; returns the epoch's loss, top-1, clips, time.

        Returns early, with epoch_steps_done < steps_per_epoch, when a process got a signal.
        """
        self.train_model.train()
        first_batch = self.epoch_steps_done * self.accumulation
        self.train_loader.set_epoch(epoch, first_batch)
        # Sums over the epoch (all processes): loss x clips, clips, correct clips.
        epoch_sums = [0.0, 0.0, 0.0]
        group_sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        started = time.perf_counter()
        description = f"epoch {epoch + 1}/{self.max_epoch}"
        with (
            stop.closing(iter(self.train_loader)) as epoch_batches,
            progress_bar(
                self.steps_per_epoch, description, self.main, initial=self.epoch_steps_done
            ) as bar,
        ):
            batches = itertools.islice(
                epoch_batches, self.steps_per_epoch * self.accumulation - first_batch
            )
            for micro_step, batch in enumerate(batches, start=first_batch + 1):
                group_sums += self._forward_backward(batch, micro_step % self.accumulation == 0)
                if micro_step % self.accumulation:
                    continue
                stop_flag = float(stop.signal_number is not None)
                totals = all_reduce(torch.cat([group_sums, group_sums.new_tensor([stop_flag])]))
                group_sums.zero_()
                # One device synchronisation per step: everything the step reports, at once.
                *step_sums, stop_requested = totals.tolist()
                loss = step_sums[0] / step_sums[1] if step_sums[1] else math.nan
                if not math.isfinite(loss):
                    raise NonFiniteLossError(self._non_finite_message(epoch, loss))
                lr = self.schedule.lr
                self._optimizer_step()
                epoch_sums = [
                    total + value for total, value in zip(epoch_sums, step_sums, strict=True)
                ]
                self.epoch_steps_done += 1
                self._steps_this_session += 1
                clips_per_second = epoch_sums[1] / (time.perf_counter() - started)
                self._log_step(epoch, loss, lr, clips_per_second, bar)
                if stop_requested:
                    stop.agree(True)
                    break
        loss_sum, clips, correct = epoch_sums
        elapsed = time.perf_counter() - started
        return {
            "train_loss": loss_sum / max(clips, 1),
            "train_top1": 100.0 * correct / max(clips, 1),
            "clips_per_s": clips / elapsed,
            "time": elapsed,
        }

    def _forward_backward(self, batch: dict, synchronize: bool) -> torch.Tensor:
        """One batch's forward and backward; returns (loss x clips, clips, correct clips).

        Gradients are averaged over the processes (DDP) only on the last batch of a step.
        """
        video = self.train_loader.model_input(batch["video"], self.device)
        label = batch["label"].to(self.device, non_blocking=True)
        video, target = self.soft_targets(video, label)
        no_sync = self.world_size > 1 and not synchronize
        with self.train_model.no_sync() if no_sync else contextlib.nullcontext():
            with self.precision.autocast():
                logits = self.train_model(video)
            loss = soft_target_cross_entropy(logits, target, self.class_weights)
            self.precision.scaler.scale(loss / self.accumulation).backward()
        clips = len(label)
        correct = (logits.detach().argmax(dim=1) == label).sum()
        return torch.stack(
            [loss.detach() * clips, loss.new_tensor(float(clips)), correct.to(loss.dtype)]
        ).double()

    def _optimizer_step(self) -> None:
        solver, scaler = self.cfg.SOLVER, self.precision.scaler
        if solver.CLIP_GRAD_VAL is not None or solver.CLIP_GRAD_L2NORM is not None:
            scaler.unscale_(self.optimizer)
            if solver.CLIP_GRAD_VAL is not None:
                nn.utils.clip_grad_value_(self.model.parameters(), solver.CLIP_GRAD_VAL)
            if solver.CLIP_GRAD_L2NORM is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), solver.CLIP_GRAD_L2NORM)
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()

    def _non_finite_message(self, epoch: int, loss: float) -> str:
        kept = (
            f"the last good checkpoint is {self.last_checkpoint}"
            if self.last_checkpoint
            else "no checkpoint was written yet"
        )
        return (
            f"the training loss is {loss} at epoch {epoch + 1}, step {self.epoch_steps_done + 1} "
            f"of {self.steps_per_epoch}; stopping ({kept}). Lower SOLVER.BASE_LR, or set "
            "SOLVER.CLIP_GRAD_L2NORM"
        )

    def _remaining_time(self) -> float:
        total_steps = self.max_epoch * self.steps_per_epoch
        per_step = (time.perf_counter() - self._started) / max(self._steps_this_session, 1)
        return per_step * (total_steps - self.schedule.step_count)

    def _log_step(self, epoch: int, loss: float, lr: float, clips_per_second: float, bar) -> None:
        postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.3g}", "clips/s": f"{clips_per_second:.1f}"}
        bar.set_postfix(postfix, refresh=False)
        bar.update()
        step = self.schedule.step_count
        if step % self.cfg.LOG_PERIOD:
            return
        eta = self._remaining_time()
        self.log.write(
            "step",
            step,
            epoch=epoch + self.epoch_steps_done / self.steps_per_epoch,
            loss=loss,
            lr=lr,
            clips_per_s=clips_per_second,
            eta_s=eta,
        )
        if bar.disable:
            logger.info(
                "epoch %d/%d step %d/%d: loss %.4f, lr %.3g, %.1f clips/s, eta %s",
                epoch + 1,
                self.max_epoch,
                self.epoch_steps_done,
                self.steps_per_epoch,
                loss,
                lr,
                clips_per_second,
                format_duration(eta),
            )

    def _end_epoch(self, epoch: int, stats: dict[str, float], stop: StopRequest) -> None:
        """Validation, the epoch's log line, a checkpoint and the curves, when they are due.
        A stop request ends validation early: the epoch is logged without its top-1."""
        self.epochs_done, self.epoch_steps_done = epoch + 1, 0
        last = self.epochs_done == self.max_epoch
        val_top1 = None
        if last or self.epochs_done % self.cfg.TRAIN.EVAL_PERIOD == 0:
            val_top1 = self._validate(last, stop)
            if stop.requested:
                logger.info(
                    "validation of epoch %d stopped by %s: the epoch is trained, its validation "
                    "top-1 is not measured",
                    self.epochs_done,
                    stop.name,
                )
        if self.train_loader.skipped:
            logger.warning(self.train_loader.summary())
        skipped = all_reduce(
            torch.tensor([len(self.train_loader.skipped)], device=self.device)
        ).item()
        # Top-1 on mixed clips measures nothing; it is reported without mixup only.
        train_top1 = None if self.cfg.MIXUP.ENABLE else stats["train_top1"]
        self.log.write(
            "epoch",
            self.schedule.step_count,
            epoch=self.epochs_done,
            train_loss=stats["train_loss"],
            train_top1=train_top1,
            val_top1=val_top1,
            lr=self.schedule.lr_at(self.schedule.step_count - 1),
            time_s=stats["time"],
            clips_per_s=stats["clips_per_s"],
            skipped_videos=skipped,
        )
        summary = [f"loss {stats['train_loss']:.4f}"]
        if train_top1 is not None:
            summary.append(f"train top-1 {train_top1:.1f} %")
        if val_top1 is not None:
            summary.append(f"val top-1 {val_top1:.1f} %")
        summary.append(
            f"{format_duration(stats['time'])} ({stats['clips_per_s']:.1f} clips/s), "
            f"eta {format_duration(self._remaining_time())}"
        )
        logger.info("epoch %d/%d: %s", self.epochs_done, self.max_epoch, ", ".join(summary))
        # Before the epoch's checkpoint, which records the best so far.
        self._keep_best(val_top1, last)
        if last or self.epochs_done % self.cfg.TRAIN.CHECKPOINT_PERIOD == 0:
            self._save_checkpoint()
        if self.main:
            with written_whole(self.output_dir / CURVES_FILE) as partial:
                plot_curves(read_log(self.output_dir), partial)

    def _keep_best(self, val_top1: float | None, last: bool) -> None:
        """Writes best.pyth when `val_top1` is the best so far (ties: the later); after the last
        epoch, an earlier best gets the temperature fitted now, the best calibration known."""
        if val_top1 is not None and (self.best_val_top1 is None or val_top1 >= self.best_val_top1):
            self.best_val_top1 = val_top1
            self._save_model(BEST_MODEL, val_top1=val_top1)
            return
        best = model_path(self.output_dir, BEST_MODEL)
        if last and self.main and self.temperature is not None and best.is_file():
            add_entries(best, **self._calibration())

    def _validate(self, last: bool, stop: StopRequest) -> float | None:
        """The validation top-1 (percent; None when stopped or nothing decoded). After the last
        epoch, also warns when the split is small and fits the temperature of the final weights
        to the validation logits, where some are classified right and some wrong."""
        if not last:
            return validate(self.model, self.val_loader, self.device, self.precision, stop)
        validated = validation_logits(
            self.model, self.val_loader, self.device, self.precision, stop
        )
        if validated is None:
            return None
        logits, labels = validated
        correct, total = int((logits.argmax(dim=1) == labels).sum()), len(labels)
        warning = small_split_warning("validation", correct, total)
        if warning:
            logger.warning("%s", warning)
        if correct in (0, total):
            # The NLL then falls without end towards one end of the range: no temperature fits.
            logger.info(
                "no temperature fitted: %s of the %d validation videos are classified right; "
                "the probabilities stay the model's own",
                "all" if correct else "none",
                total,
            )
            return 100.0 * correct / total
        self.temperature = fit_temperature(logits, labels)
        logger.info(
            "temperature %.3f fitted on %d validation videos (NLL %.4f -> %.4f)",
            self.temperature,
            total,
            F.cross_entropy(logits, labels),
            F.cross_entropy(logits / self.temperature, labels),
        )
        return 100.0 * correct / total

    def _save_checkpoint(self) -> None:
        """Checkpoints the current state (all processes call this; the main one writes)."""
        path = checkpoint_path(self.output_dir, self.epochs_done, self.epoch_steps_done)
        if path == self.last_checkpoint:
            return
        rng_states = all_gather_objects(rng_state())
        if self.main:
            try:
                self._write_checkpoint(path, rng_states)
            except CheckpointError as err:
                kept = (
                    f"the last good checkpoint, {self.last_checkpoint}, is kept and the same "
                    "command resumes from it"
                    if self.last_checkpoint
                    else "this run has no checkpoint yet"
                )
                raise CheckpointError(f"{err}; {kept}") from None
            if not self.epoch_steps_done:
                remove_mid_epoch_checkpoints(self.output_dir, before=path)
            logger.info("checkpoint: %s", path)
        self.last_checkpoint = path
        self._save_model(LAST_MODEL)

    def _save_model(self, name: str, **entries) -> None:
        """The main process writes the current weights as the run's model `name` (LAST_MODEL,
        BEST_MODEL), with `entries` and the temperature once fitted."""
        if not self.main:
            return
        try:
            save_model(
                model_path(self.output_dir, name),
                self.model,
                cfg=self.cfg,
                class_names=self.class_names.names,
                source=self.source,
                epochs_done=self.epochs_done,
                optimizer_steps=self.schedule.step_count,
                **self._calibration(),
                **entries,
            )
        except CheckpointError as err:
            kept = (
                f"; the same command resumes from {self.last_checkpoint}"
                if self.last_checkpoint
                else ""
            )
            raise CheckpointError(f"{err}{kept}") from None

    def _calibration(self) -> dict[str, float]:
        """The temperature entry of the current weights' checkpoints, once it is fitted."""
        return {} if self.temperature is None else {"temperature": self.temperature}

    def _write_checkpoint(self, path: Path, rng_states: list[dict]) -> None:
        save_training_state(
            path,
            self.model,
            self.optimizer,
            self.schedule,
            self.precision.scaler,
            epochs_done=self.epochs_done,
            steps_done=self.epoch_steps_done,
            steps_per_epoch=self.steps_per_epoch,
            rng_states=rng_states,
            cfg=self.cfg,
            class_names=self.class_names.names,
            source=self.source,
            optimizer_steps=self.schedule.step_count,
            best_val_top1=self.best_val_top1,
            **self._calibration(),
        )
