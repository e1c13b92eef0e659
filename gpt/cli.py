"""Command line: `python -m gpt train | sample | plot` (also installed as `gpt`).

Settings resolve in this order, later ones winning: TrainConfig's defaults, then --preset,
then the flags you typed.  With --resume the checkpoint's own settings replace the
defaults and the preset, and flags you type still win (e.g. a larger --max-iters).
"""
import argparse
import dataclasses
import difflib
import os
import sys
from typing import List, Optional

from .model import POSITION_EMBEDDINGS
from .train import MODEL_FIELDS, PRESETS, TrainConfig

HELP = {
    "n_layer": "L, the number of decoder blocks",
    "n_head": "H, attention heads per block (must divide --n-embd)",
    "n_embd": "D, the width of token vectors",
    "block_size": "T, the context length in characters (also the size of the position table)",
    "dropout": "dropout probability on embeddings, attention weights and residual branches (0 disables)",
    "bias": "use biases in Linear and LayerNorm layers (--no-bias drops them)",
    "position_embedding": "W_p: 'learned' (a trained table, GPT-2) or 'sinusoidal' (fixed sines and cosines, "
                          "the seed texts)",
    "tie_word_embeddings": "use the token table W_e^T as the output head (GPT-2); --no-tie-word-embeddings "
                           "learns a head W_s of its own (the seed texts)",
    "data": "a UTF-8 text file, 'shakespeare' (Tiny Shakespeare, downloaded once; see MINIGRAD_DATA) "
            "or 'pystdlib' (Python's own standard-library source: no network needed)",
    "batch_size": "B, sequences per training step",
    "grad_accum": "K, micro-batches of --batch-size whose gradients add up into one step (a larger batch in "
                  "the same memory); under mpiexec -n N the step sees B x K x N sequences",
    "max_iters": "training steps in total (a resumed run continues up to this number)",
    "lr": "peak learning rate, reached after warmup",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup_iters": "steps of linear warmup from ~0 to --lr",
    "lr_decay_iters": "step at which the cosine decay reaches --min-lr (default: --max-iters)",
    "weight_decay": "AdamW decoupled weight decay, applied to 2-D weights only",
    "beta1": "AdamW beta1 (momentum of the gradient average)",
    "beta2": "AdamW beta2 (momentum of the squared-gradient average)",
    "grad_clip": "clip the global gradient norm to this value (0 disables)",
    "eval_interval": "evaluate both splits, log, plot and checkpoint every this many steps",
    "eval_iters": "batches averaged per split at each evaluation",
    "seed": "seed for weights, dropout and batch sampling (the same seed gives the same run)",
    "out_dir": "folder for log.jsonl, loss.png and the best/ and last/ checkpoints",
    "device": "minigrad backend: numpy (CPU, always there) or cl (OpenCL)",
    "jit": "capture the training step's kernels once and replay them (--no-jit: rebuild the graph "
           "every step; same losses, slower)",
}


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; unset flags stay absent (SUPPRESS), so we can tell
    which ones were typed and let them override the preset."""
    p.add_argument("--preset", choices=sorted(PRESETS), default=argparse.SUPPRESS,
                   help="a named set of settings (listed at the end); flags you type override it")
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        help_text = f"{HELP[field.name]} (default: {default})"
        if field.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif field.name == "device":
            p.add_argument(flag, choices=["numpy", "cl"], default=argparse.SUPPRESS, help=help_text)
        elif field.name == "position_embedding":
            p.add_argument(flag, choices=list(POSITION_EMBEDDINGS), default=argparse.SUPPRESS, help=help_text)
        else:
            kind = {"n_layer": int, "n_head": int, "n_embd": int, "block_size": int, "batch_size": int,
                    "grad_accum": int, "max_iters": int, "warmup_iters": int, "lr_decay_iters": int, "eval_interval": int,
                    "eval_iters": int, "seed": int, "data": str, "out_dir": str}.get(field.name, float)
            p.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=field.name.upper(), help=help_text)
    p.add_argument("--resume", action="store_true",
                   help="continue from <out-dir>/last with its settings, weights, optimizer and RNG states")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (eval lines are still printed)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out-dir that holds one (deletes its log and checkpoints)")
    _add_threads_flag(p)


def _add_threads_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="BLAS threads for the NumPy backend (default: the physical cores; fewer when the machine "
                        "is busy with other work: oversubscribed BLAS threads slow everything down)")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) that says where the help is."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="gpt", description="Train, sample and plot a character-level GPT "
                           "built on minigrad.")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,plot}")
    sub.required = True

    presets = "\n".join(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in preset.items())
                        for name, preset in PRESETS.items())
    p = sub.add_parser("train", help="train a model", description="Train a character-level GPT. " + __doc__,
                       epilog="presets:\n" + presets, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_train_flags(p)

    p = sub.add_parser("sample", help="generate text from a checkpoint",
                       description="Generate text from a trained checkpoint with a KV cache.")
    p.add_argument("--out-dir", "--ckpt", dest="out_dir", default="out",
                   help="a training --out-dir (its best/ checkpoint is used, else last/) or a checkpoint folder")
    p.add_argument("--prompt", default=None,
                   help="text to continue (every character must be in the vocabulary; default: a newline)")
    p.add_argument("--num-tokens", type=int, default=500, help="characters to generate")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples to draw")
    p.add_argument("--temperature", type=float, default=0.8, help="below 1 is more conservative, above 1 more random")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely characters only (1: greedy)")
    p.add_argument("--seed", type=int, default=1337, help="seed for sampling")
    p.add_argument("--device", choices=["numpy", "cl"], default="numpy", help="minigrad backend")
    _add_threads_flag(p)

    p = sub.add_parser("plot", help="plot loss curves of one or more runs",
                       description="Plot train and val loss of one or more training runs in one figure.")
    p.add_argument("runs", nargs="+", help="training --out-dir folders (each holds a log.jsonl)")
    p.add_argument("--out", default="loss.png", help="output file; .png or .svg")
    p.add_argument("--names", nargs="+", default=None, help="legend names (default: the folder names)")
    p.add_argument("--title", default=None, help="figure title")
    return parser


def resolve_train_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- preset <- typed flags; on --resume the checkpoint's settings replace the defaults."""
    typed = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    values = dataclasses.asdict(TrainConfig())
    if getattr(args, "resume", False):
        from .train import saved_train_config
        saved = saved_train_config(typed.get("out_dir", values["out_dir"]))
        for name in MODEL_FIELDS:
            was = saved.get(name, values[name])           # older checkpoints: learned positions, tied head
            if name in typed and typed[name] != was:
                raise ValueError(f"--{name.replace('_', '-')} {typed[name]} differs from the checkpoint's "
                                 f"{was}; a resumed run keeps the model's shape and dropout")
        values.update(saved)
    if hasattr(args, "preset") and not getattr(args, "resume", False):
        values.update(PRESETS[args.preset])
    values.update(typed)
    cfg = TrainConfig(**values)
    for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum", "eval_interval",
                 "eval_iters"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.max_iters < 0:
        raise ValueError(f"--max-iters must be >= 0, got {cfg.max_iters}")
    return cfg


def require_at_least(value, name: str, low) -> None:
    """sample's numbers; the same message as training's settings get."""
    if value < low:
        raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")


def check_device(device: str) -> None:
    """--device cl on a machine without OpenCL: one line saying what is missing and how to install it."""
    from minigrad.backends import canonical_device, get_backend
    from minigrad.backends.opencl import find_devices
    if canonical_device(device) == "cl":
        try:
            find_devices()                     # names what is missing and the install command
            get_backend("cl")
        except Exception as e:  # OpenCLUnavailable (with the install command), or a driver that fails to start
            raise ValueError(f"--device cl: {' '.join(str(e).split())}; `python -m minigrad` reports what works "
                             f"here, --device numpy always does") from None


def cmd_train(args) -> int:
    from .distributed import detect_world, launched_rank, launched_size
    from .train import train
    # under mpiexec rank 0 resolves the settings (reading the checkpoint on --resume) for all:
    # only its machine needs the run folder
    world = detect_world()
    cfg = world.from_root(lambda: resolve_train_config(args))
    if cfg.device == "cl":
        world.choose_opencl_device()              # before the backend starts: each rank its own GPU
    check_device(cfg.device)
    summary = train(cfg, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite,
                    threads=args.threads)
    if launched_rank() != 0:
        return 130 if summary["status"] == "interrupted" else 0
    launcher = f"mpiexec -n {launched_size()} " if launched_size() > 1 else ""
    if summary["status"] == "interrupted":
        print(f"stopped at iteration {summary['iter']}; continue with: {launcher}python -m gpt train --out-dir "
              f"{cfg.out_dir} --resume", file=sys.stderr)
        return 130
    print(f"done: {summary['iter']} iterations, best val loss {summary['best_val_loss']:.4f}; "
          f"checkpoints and loss.png in {cfg.out_dir}")
    return 0


def cmd_sample(args) -> int:
    from .checkpoint import load_checkpoint
    require_at_least(args.num_tokens, "num_tokens", 1)
    require_at_least(args.num_samples, "num_samples", 1)
    require_at_least(args.temperature, "temperature", 0)
    if args.top_k is not None:
        require_at_least(args.top_k, "top_k", 1)
    check_device(args.device)
    model, tokenizer, meta = load_checkpoint(args.out_dir, device=args.device)
    prompt = args.prompt
    if not prompt:                                     # start a fresh line, or the first character known
        prompt = "\n" if "\n" in tokenizer.stoi else tokenizer.chars[0]
    try:
        start = tokenizer.encode(prompt)
    except ValueError as e:
        raise ValueError(f"the prompt has {e}; this model knows only the {tokenizer.vocab_size} characters "
                         f"of its training text") from None
    for i in range(args.num_samples):
        seed = None if args.seed is None else args.seed + i
        ids = model.generate(start[None, :], args.num_tokens, temperature=args.temperature, top_k=args.top_k,
                             seed=seed)
        print(tokenizer.decode(ids[0]))
        if args.num_samples > 1:
            print("-" * 40)
    return 0


def cmd_plot(args) -> int:
    from .plot import plot_runs
    ext = os.path.splitext(args.out)[1].lower()
    if ext not in (".png", ".svg"):
        raise ValueError(f"--out must end in .png or .svg, got {args.out!r}")
    if args.names and len(args.names) != len(args.runs):
        raise ValueError(f"--names has {len(args.names)} names for {len(args.runs)} runs")
    print(plot_runs(args.runs, args.out, names=args.names, title=args.title))
    return 0


# nanoGPT's names that differ from ours by more than underscores, per command
NANOGPT_NAMES = {"train": {"--learning_rate": "--lr"},
                 "sample": {"--start": "--prompt", "--max_new_tokens": "--num-tokens"}}


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def nanogpt_spellings(parser: argparse.ArgumentParser, argv: List[str]) -> List[str]:
    """Flags as nanoGPT users type them: --max_iters=10 for --max-iters 10, --learning_rate for
    --lr, sample's --start and --max_new_tokens, and --bias=False for --no-bias."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in ("train", "sample", "plot"):
        return argv
    booleans = {o for a in _subparser(parser, command)._actions if isinstance(a, argparse.BooleanOptionalAction)
                for o in a.option_strings}
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            name = "--" + NANOGPT_NAMES.get(command, {}).get(name, name)[2:].replace("_", "-")
            if name in booleans and value in ("True", "False", "true", "false"):
                arg = name if value.lower() == "true" else "--no-" + name[2:]
            else:
                arg = name + eq + value
        out.append(arg)
    return out


def reject_unknown(parser: argparse.ArgumentParser, command: str, arg: str) -> None:
    """One line for a flag we do not know, suggesting the nearest one we do."""
    sub = _subparser(parser, command)
    if not arg.startswith("-"):
        sub.error(f"unexpected argument {arg!r}")
    name = arg.split("=")[0]
    known = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    sub.error(f"unknown flag {name}" + (f"; did you mean {close[0]}?" if close else ""))


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit code.  Expected failures print one line, no traceback
    (set GPT_TRACEBACK=1 to see one)."""
    from .checkpoint import CheckpointError
    from .data import DataError
    from .distributed import DistributedError, FollowerExit, end_job_unless_shared, launched_rank, share_of_cores
    from .train import TrainingStopped
    from minigrad.threads import limit_blas_threads, physical_cores
    parser = build_parser()
    argv = nanogpt_spellings(parser, sys.argv[1:] if argv is None else list(argv))
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        reject_unknown(parser, args.command, unknown[0])
    handler = {"train": cmd_train, "sample": cmd_sample, "plot": cmd_plot}[args.command]
    speaks = launched_rank() == 0                 # under mpiexec, rank 0 reports for the job
    try:
        if not hasattr(args, "threads"):                  # plot draws; it runs no matmuls
            return handler(args)
        if args.threads is None:                          # ranks on one machine share its cores
            args.threads = share_of_cores(physical_cores())
        with limit_blas_threads(args.threads):
            return handler(args)
    except FollowerExit:                          # rank 0 failed and has said why
        return 2
    except TrainingStopped as e:
        if speaks:
            print(f"gpt {args.command}: {e}", file=sys.stderr)
        end_job_unless_shared(e, 1)
        return 1
    except (DataError, CheckpointError, OSError, ValueError, DistributedError) as e:
        if os.environ.get("GPT_TRACEBACK"):
            raise
        if speaks or not getattr(e, "on_every_rank", False):
            print(f"gpt {args.command}: error: {e}", file=sys.stderr)
        end_job_unless_shared(e, 2)               # an error on this rank alone: stop the others
        return 2
    except KeyboardInterrupt as e:
        print(f"gpt {args.command}: interrupted", file=sys.stderr)
        end_job_unless_shared(e, 130)
        return 130
