"""Memory and speed of the reversible models next to their peers, measured in one run.

    python tools/benchmark.py                          # the model table, 16x224x224, fp32
    python tools/benchmark.py --frames 4 --size 64     # a quick look
    python tools/benchmark.py --section data           # data loading (revvideo.benchmark.data)
    python tools/benchmark.py --section paper          # the paper's ImageNet table
    python tools/benchmark.py --json results.json      # also write the figures as JSON
    python tools/benchmark.py --device cuda --section budget --memory-budget 16
    python tools/benchmark.py --device cuda --section budget --budget-levers overlap fill
    python tools/benchmark.py --device cuda --section pipeline --batch 32 --data-workers 16
    python tools/benchmark.py --device cuda --section peak --batch 8
    python tools/benchmark.py --section timeline       # long videos: windows/s, flat memory
    python tools/benchmark.py --section deploy         # revvideo-serve, onnxruntime vs PyTorch

Every model is measured in a fresh process. Model figures, per model:
- params, GFLOPs: fvcore, one clip, counted on the CPU whatever --device says.
- saved MiB/clip: tensors autograd keeps for backward, growth from batch 1 to batch 2.
- peak MiB/clip: peak memory of a training step (forward + backward), growth from batch 1 to 2;
  live tensor bytes on the CPU, `max_memory_allocated` on CUDA.
- step s/clip: wall time of a training step (forward + backward) divided by the batch size.
- infer clips/s: eval-mode forward under `torch.no_grad()`.
The depth sweep grows the last-but-one stage (stage transitions stay at layers 1, 3, depth - 2).

Paper section: the paper's ImageNet table (1000 classes, --size px images; the paper's figures
are at 224): params, GFLOPs, and the peak and saved memory per image as above, of ViT-S/B/L
(torchvision's vit_b_16 and vit_l_16, and a ViT-S built with torchvision's VisionTransformer)
against revvideo's Rev-ViT-S/B/L, and of MViT-B (revvideo's MViT with the image Rev-MViT-B's
geometry) against the image Rev-MViT-B; each row with the paper's figure, each reversible row
with the reductions, ours and the paper's. About 2 minutes on 2 otherwise idle CPU cores;
--paper-models picks pairs.

Data section: clips/s (train) and videos/s (test) of revvideo's loader against the plain
pytorchvideo recipe on the same files (revvideo.benchmark.data says what each row runs), and
training clips/s by number of loader workers, with clips/s per worker: a GPU that trains N
clips/s needs about N / (clips/s per worker) workers.

Pipeline section: Rev-MViT-B training steps (SGD, --batch clips) on clips that revvideo's loader
decodes from the data benchmark's files, against the same steps on one batch kept on the device;
end to end as a percentage of model only says whether the data keeps up.

Peak section: for each memory-budget model at --batch clips, what is alive at the peak of one
training step (after a warm one), per clip, by the line of the model's code (revvideo's or
torchvision's) that allocated it: on CUDA the allocator's history of the step replayed to its
peak, on the CPU the live tensors followed as the step runs (with the op that made each).

Timeline section: `classify.py --timeline` on class-block videos of --timeline-minutes at
320x240, 30 fps (generated once into the temporary folder), each in a fresh process: windows,
windows/s, times real time (video seconds per second) and the process's peak RSS (and peak CUDA
memory), for the quick start's Rev-MViT-XS on each video and Rev-MViT-B 16x4 on the shortest
(random weights: the same speed and memory); the last line compares the peaks of the longest
and the shortest video (goal: within 10 %).

Deploy section (needs the deploy extra): the quick start's Rev-MViT-XS (random weights) served by
revvideo-serve in this process on a free port with --deploy-workers workers: requests/s and
latency (median, p90) of POST /classify of a 2 s 320x240 video (answered with its timeline) with
each of --deploy-clients concurrent clients, --deploy-requests each after one untimed; and the
model's forward on --batch random clips, eager PyTorch against its ONNX export on onnxruntime:
clips/s, each in a fresh process, the median of --repeats timings of 20 forwards each.

Memory-budget section (CUDA only), per model, depth and precision, each in a fresh process
limited to --memory-budget GiB with `torch.cuda.set_per_process_memory_fraction`:
- largest batch: the largest training batch whose step (forward, backward, SGD step) fits,
  found by doubling, then bisection to within --budget-tolerance, recovering from each
  out-of-memory error (revvideo.utils.memory.largest_batch).
- clips/s: training clips per second at that batch over --budget-steps steps after
  --budget-warmup, timed with CUDA events; if repeated steps no longer fit (the allocator
  fragments), the batch steps down until they do, and "timed at" says where they ran.
- peak GiB / reserved GiB: `max_memory_allocated` / `max_memory_reserved` over the timed steps.
- --budget-levers: Rev-MViT-B again with throughput levers on: overlap (the recompute on a side
  stream), compile (compiled branches), store (the last two stages keep their activations),
  fill (at the batch MViT-B (revvideo) was timed at, or --budget-fill-batch, as many of the
  deepest layers stored as fit beside it, the "stored" column; like MVIT.REV.STORED_LAYERS auto
  before training, without its reserve).
fp32 is IEEE float32 (TF32 off for matmuls and convolutions); bf16 is bfloat16 autocast.
"""

# Only the standard library is imported here, so that --help and mistakes in the options are
# answered at once; the measurements (revvideo.benchmark: torch, the models) are imported after.
import argparse
from pathlib import Path

from revvideo.utils.cli import command_parser, positive_int, run_interruptibly

SECTIONS = ("models", "data", "budget", "paper", "pipeline", "peak", "timeline", "deploy", "all")
# The pairs of the paper's ImageNet table (revvideo.benchmark.paper.PAPER_PAIRS).
PAPER_MODELS = ("ViT-S", "ViT-B", "ViT-L", "MViT-B")
PRECISIONS = ("fp32", "bf16")
# The reversible engine's throughput levers (revvideo.benchmark.budget.LEVER_NAMES).
LEVERS = ("overlap", "compile", "store", "fill")


def lever_combination(text: str) -> str:
    """One of LEVERS (overlap, compile, store, fill) or several joined by +, e.g.
    `overlap+compile` or `compile+fill`; store and fill exclude each other."""
    levers = set(text.split("+"))
    if not text or not levers <= set(LEVERS):
        raise argparse.ArgumentTypeError(
            f"levers are {', '.join(LEVERS)}, alone or joined by +, not {text!r}"
        )
    if {"store", "fill"} <= levers:
        raise argparse.ArgumentTypeError("store and fill choose the stored layers each: pick one")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__)
    parser.add_argument(
        "--section",
        choices=SECTIONS,
        default="models",
        help="what to measure; all: models, budget and data, not the paper's table, the "
        "pipeline nor the peak (default: %(default)s)",
    )
    parser.add_argument(
        "--frames", type=int, default=16, help="frames per clip (default: %(default)s)"
    )
    parser.add_argument(
        "--size",
        type=int,
        default=224,
        help="side of the square clips and images, px (default: %(default)s)",
    )
    parser.add_argument(
        "--batch", type=int, default=2, help="batch of the timed steps (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed repetitions, of which the median is shown (default: %(default)s)",
    )
    parser.add_argument(
        "--depths",
        type=int,
        nargs="*",
        default=[16, 24, 40],
        help="depths of the models section's depth sweep; none: no sweep (default: 16 24 40)",
    )
    parser.add_argument(
        "--dtype",
        choices=PRECISIONS,
        default="fp32",
        help="precision of the models and paper sections (default: %(default)s)",
    )
    parser.add_argument(
        "--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--json", type=Path, help="also write the figures to this file (default: none)"
    )
    paper = parser.add_argument_group("the paper's ImageNet table (--section paper)")
    paper.add_argument(
        "--paper-models",
        nargs="+",
        choices=PAPER_MODELS,
        default=list(PAPER_MODELS),
        metavar="MODEL",
        help=f"pairs to measure, each a model and its reversible twin: {', '.join(PAPER_MODELS)} "
        "(default: all)",
    )
    budget = parser.add_argument_group("memory budget (--section budget, CUDA)")
    budget.add_argument(
        "--memory-budget",
        type=float,
        default=16.0,
        metavar="GIB",
        help="GPU memory each model may use (default: %(default)s)",
    )
    budget.add_argument(
        "--budget-dtypes",
        nargs="*",
        choices=PRECISIONS,
        default=list(PRECISIONS),
        help="precisions of the models as built (default: fp32 bf16)",
    )
    budget.add_argument(
        "--budget-depths",
        type=int,
        nargs="*",
        default=[32, 48],
        help="deeper Rev-MViT-B and MViT-B to add (default: 32 48)",
    )
    budget.add_argument(
        "--budget-depth-dtypes",
        nargs="+",
        choices=PRECISIONS,
        default=list(PRECISIONS),
        help="precisions of the deeper models (default: fp32 bf16)",
    )
    budget.add_argument(
        "--budget-warmup", type=int, default=3, help="untimed steps first (default: %(default)s)"
    )
    budget.add_argument(
        "--budget-steps", type=int, default=5, help="timed steps (default: %(default)s)"
    )
    budget.add_argument(
        "--budget-tolerance",
        type=float,
        default=1 / 16,
        help="stop the batch search within this fraction of the batch; 0: exact (default: 0.0625)",
    )
    budget.add_argument(
        "--budget-levers",
        type=lever_combination,
        nargs="*",
        default=[],
        metavar="LEVERS",
        help="add a Rev-MViT-B row per depth and precision with these levers on, each a lever or "
        f"several joined by +: {', '.join(LEVERS)} (MVIT.REV.OVERLAP_RECOMPUTE, MODEL.COMPILE, "
        "MVIT.REV.STORED_LAYERS: the last two stages' blocks, or auto at MViT-B's batch) "
        "(default: none)",
    )
    budget.add_argument(
        "--budget-fill-batch",
        type=positive_int,
        metavar="CLIPS",
        help="the batch the fill lever trains at (default: the batch MViT-B (revvideo) of the "
        "same depth and precision was timed at)",
    )
    data = parser.add_argument_group("data loading (--section data)")
    data.add_argument(
        "--data-dir",
        help="folder with train.csv and test.csv to time (default: generated Kinetics-like "
        "videos, cached in the temporary folder)",
    )
    data.add_argument(
        "--data-videos",
        type=int,
        default=16,
        help="videos to generate when --data-dir is not given (default: %(default)s)",
    )
    data.add_argument(
        "--data-video-size",
        type=int,
        nargs=2,
        default=[426, 320],
        metavar=("WIDTH", "HEIGHT"),
        help="size of the generated videos (default: 426 320, short side 320; Kinetics is also "
        "copied at 340 256)",
    )
    data.add_argument(
        "--data-workers",
        type=int,
        default=2,
        help="loader worker processes, the same for all rows and for the pipeline section "
        "(default: %(default)s)",
    )
    data.add_argument(
        "--data-worker-counts",
        type=int,
        nargs="+",
        default=[1, 2],
        metavar="WORKERS",
        help="worker counts of the clips/s-per-worker table (default: 1 2)",
    )
    pipeline = parser.add_argument_group(
        "training fed by the loader (--section pipeline; --batch, --dtype, --frames, --size, "
        "--data-dir, --data-videos, --data-video-size, --data-workers apply)"
    )
    pipeline.add_argument(
        "--pipeline-warmup",
        type=int,
        default=3,
        help="untimed steps first, each way (default: %(default)s)",
    )
    pipeline.add_argument(
        "--pipeline-steps", type=int, default=10, help="timed steps each way (default: %(default)s)"
    )
    peak = parser.add_argument_group(
        "what is alive at the peak (--section peak; --batch, --dtype, --frames, --size apply)"
    )
    peak.add_argument(
        "--peak-sites",
        type=int,
        default=12,
        help="allocation sites listed per model, the largest first (default: %(default)s)",
    )
    timeline = parser.add_argument_group("long videos (--section timeline; --device applies)")
    timeline.add_argument(
        "--timeline-minutes",
        type=float,
        nargs="+",
        default=[1.0, 10.0],
        metavar="MINUTES",
        help="lengths of the videos timed, the quick start's model on each and Rev-MViT-B on the "
        "shortest (default: 1 10)",
    )
    deploy = parser.add_argument_group(
        "revvideo-serve and onnxruntime (--section deploy; --device, --batch, --repeats apply)"
    )
    deploy.add_argument(
        "--deploy-clients",
        type=positive_int,
        nargs="+",
        default=[1, 4],
        metavar="CLIENTS",
        help="concurrent clients of each server row (default: 1 4)",
    )
    deploy.add_argument(
        "--deploy-requests",
        type=positive_int,
        default=8,
        help="timed requests per client (default: %(default)s)",
    )
    deploy.add_argument(
        "--deploy-workers",
        type=positive_int,
        default=1,
        help="the service's --workers (default: %(default)s, as revvideo-serve's)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_interruptibly(lambda: _benchmark(build_parser().parse_args(argv)))


def _benchmark(args: argparse.Namespace) -> int:
    from revvideo.benchmark import Settings, run

    run(Settings(**vars(args)))
    return 0
