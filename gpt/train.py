"""The training loop: AdamW with warmup and cosine decay, gradient clipping, evaluation on
both splits every eval_interval iterations, log.jsonl + loss.png, best/last checkpoints,
exact resume, Ctrl-C that saves, and a stop (without saving) when the loss is not finite.

Order of one iteration `it`, which is what makes resume exact:
    1. set the learning rate for `it`
    2. if it is an eval iteration: evaluate, log, plot, save best and last (state after eval)
    3. stop if it == max_iters (or Ctrl-C was pressed: save last first)
    4. one training step on a fresh batch; it += 1
A checkpoint records `it` and whether step 2 already ran for it, plus every RNG state.
"""
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
from tqdm import tqdm

import minigrad
from minigrad import Tensor, no_grad, realize
from minigrad.optim import clip_grad_norm_, cosine_lr

from .checkpoint import (CheckpointError, data_rng_state, load_checkpoint, load_optimizer_state, read_state, resolve,
                         save_checkpoint)
from .data import CharDataset, CharTokenizer, load_text
from .distributed import (DistributedError, GradientBuckets, Watchdog, detect_world, parameters_digest, rank_seed,
                          shard_seed)
from .jsonfields import check_fields
from .model import GPT, GPTConfig
from .plot import plot_runs
from .rundir import check_out_dir, remove_run
from .runlog import read_log_rows, write_log_rows

MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias", "position_embedding",
                "tie_word_embeddings")


@dataclass
class TrainConfig:
    """Every training setting, under nanoGPT's names (the CLI spells them with dashes)."""
    # model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = True
    position_embedding: str = "learned"         # or "sinusoidal": the seeds' fixed W_p
    tie_word_embeddings: bool = True            # False: a learned head W_s of its own, as in the seeds
    # data
    data: str = "shakespeare"
    batch_size: int = 12
    grad_accum: int = 1                         # micro-batches per step on each rank, gradients added up
    # optimizer and schedule
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: Optional[int] = None        # None: decay until max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0                      # 0 disables clipping
    # evaluation, output, reproducibility
    eval_interval: int = 250
    eval_iters: int = 20
    seed: int = 1337
    out_dir: str = "out"
    device: str = "numpy"
    jit: bool = True                            # capture the training step once, then replay its kernels


PRESETS = {
    # nanoGPT's "laptop" run of shakespeare_char: small enough for a CPU
    # (nanoGPT's train.py leaves bias off, so the recipe has no biases in Linear and LayerNorm)
    "laptop": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0, bias=False, max_iters=2000,
                   lr=1e-3, min_lr=1e-4, lr_decay_iters=2000, warmup_iters=100, beta2=0.99, eval_interval=250,
                   eval_iters=20),
    # nanoGPT's config/train_shakespeare_char.py: the "baby GPT" (a GPU is advisable)
    "shakespeare-char": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, dropout=0.2,
                             max_iters=5000, lr=1e-3, min_lr=1e-4, lr_decay_iters=5000, warmup_iters=100,
                             beta2=0.99, eval_interval=250, eval_iters=200),
    # a smoke test: seconds, not minutes
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=8, dropout=0.0, max_iters=200,
                 lr=3e-3, min_lr=3e-4, lr_decay_iters=200, warmup_iters=10, eval_interval=50, eval_iters=10),
    # the README's first command: a couple of minutes on a laptop, on the offline corpus
    "quickstart": dict(n_layer=2, n_head=4, n_embd=64, block_size=64, batch_size=16, dropout=0.0,
                       max_iters=1000, lr=2e-3, min_lr=2e-4, lr_decay_iters=1000, warmup_iters=50,
                       eval_interval=200, eval_iters=10, data="pystdlib"),
    # exactly the model of the seed texts: sinusoidal W_p, its own head W_s, biases, GELU FFN of
    # width 4D; trained with the laptop recipe's sizes and schedule
    "seed": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0, bias=True,
                 position_embedding="sinusoidal", tie_word_embeddings=False, max_iters=2000, lr=1e-3,
                 min_lr=1e-4, lr_decay_iters=2000, warmup_iters=100, beta2=0.99, eval_interval=250,
                 eval_iters=20, data="shakespeare"),
}


class TrainingStopped(Exception):
    """The loss stopped being finite; raised with a message for the user.  The ranks of a job
    share their losses, so all of them stop alike."""
    on_every_rank = True


class StopFlag:
    """First Ctrl-C (or SIGTERM, what a scheduler or `kill` sends) asks the loop to save and
    stop at the next safe point; a second one interrupts at once (the default behaviour).
    Under MPI the ranks vote on it, so one rank told to stop stops them all, in step."""
    SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self):
        self.requested = False
        self.previous = {}

    def _handler(self, signum, frame):
        self.requested = True
        signal.signal(signum, self.previous.get(signum) or signal.SIG_DFL)
        tqdm.write(f"\n{self.SIGNALS[signum]}: saving the last checkpoint, then stopping (again to abort at once)",
                   file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self._handler) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


def lr_at(cfg: TrainConfig, it: int) -> float:
    decay_iters = cfg.lr_decay_iters if cfg.lr_decay_iters is not None else cfg.max_iters
    return cosine_lr(it, cfg.lr, cfg.min_lr, cfg.warmup_iters, decay_iters)


def make_train_step(model: GPT, optimizer, grad_clip: float = 1.0, use_jit: bool = True):
    """step(x, y) -> loss: forward, backward, gradient clipping (0 disables it), the optimizer's
    update.  With use_jit, minigrad.jit checks the step on its second and third calls, records its
    kernels on the fourth and replays them afterwards (same numbers as eager, dropout included):
    no graph building per step."""
    def train_step(x: Tensor, y: Tensor) -> Tensor:
        _, loss = model(x, y)
        loss.backward()
        if grad_clip > 0:
            clip_grad_norm_(optimizer.params, grad_clip)
        optimizer.step()
        optimizer.zero_grad()
        return loss
    return minigrad.jit(train_step, state=[model, optimizer]) if use_jit else train_step


class CombiningStep:
    """A training step whose gradient is the mean over several micro-batches: `grad_accum`
    of them on this rank, times the ranks of the job.  step(batches, stop_requested) ->
    (mean loss, number of ranks asking to stop).

    The gradient has to leave the device to meet the other ranks', so the step is two
    captured pieces with the host in between:
        forward_backward(x, y) -> loss, flat gradient buckets     once per micro-batch
        host: add the micro-batches' buckets, allreduce them over the ranks, divide by the
              number of micro-batches in the job
        update(buckets): clip, AdamW                              once per step
    The loss and the stop request ride in the last bucket, so the ranks agree on both with
    no extra message.  Adding gradients in float32 in another order (4 micro-batches as
    2 ranks x 2 instead of 1 x 4) changes the last bits, nothing more."""

    def __init__(self, model: GPT, optimizer, grad_clip: float, use_jit: bool, world, grad_accum: int):
        self.params, self.world = optimizer.params, world
        self.micro_batches = grad_accum * world.size
        self.buckets = GradientBuckets([p.shape for p in self.params], extra=2)   # + loss sum, stop votes
        self.device = self.params[0].device

        def forward_backward(x: Tensor, y: Tensor):
            optimizer.zero_grad()
            _, loss = model(x, y)
            loss.backward()
            flats = [Tensor.cat(*[self.params[i].grad.reshape(-1) for i in group])     # (n_b,)
                     for group in self.buckets.groups]
            realize(loss, *flats)            # in one schedule: the loss is not computed twice
            return (loss, *flats)

        def update(*flats: Tensor) -> Tensor:
            for group, flat in zip(self.buckets.groups, flats):
                offset = 0
                for i in group:                  # each gradient a view of its bucket: no copies
                    p = self.params[i]
                    p.grad = flat.shrink(((offset, offset + p.numel()),)).reshape(p.shape)
                    offset += p.numel()
            if grad_clip > 0:
                clip_grad_norm_(self.params, grad_clip)
            optimizer.step()
            optimizer.zero_grad()
            return optimizer.step_tensor

        self.forward_backward = minigrad.jit(forward_backward, state=[model]) if use_jit else forward_backward
        self.update = minigrad.jit(update, state=[model, optimizer]) if use_jit else update

    def __call__(self, batches, stop_requested: bool):
        sums = self.buckets.gradients()
        loss_sum = 0.0
        for k, (x, y) in enumerate(batches):
            loss, *flats = self.forward_backward(Tensor(x, device=self.device), Tensor(y, device=self.device))
            for total, flat in zip(sums, flats):
                if k == 0:
                    total[:] = flat.numpy()
                else:
                    total += flat.numpy()
            loss_sum += loss.item()
        self.buckets.extras[:] = (loss_sum, float(stop_requested))
        self.world.sum_(self.buckets.buffers)
        scale = np.float32(1.0 / self.micro_batches)
        for total in sums:
            total *= scale
        self.update(*[Tensor(total, device=self.device) for total in sums])
        loss_mean, stop_votes = self.buckets.extras / np.float32([self.micro_batches, 1])
        return float(loss_mean), int(stop_votes)


def make_eval_loss(model: GPT, use_jit: bool = True):
    """loss(x, y): the model's loss on a batch, for evaluation (call it in eval mode, under no_grad).
    With use_jit its kernels are captured like a training step's (minigrad.jit, reading the
    parameters wherever training left them), so an evaluation of 200 batches builds no graphs."""
    def eval_loss(x: Tensor, y: Tensor) -> Tensor:
        return model(x, y)[1]
    return minigrad.jit(eval_loss, state=[model]) if use_jit else eval_loss


def estimate_loss(model: GPT, data: CharDataset, eval_iters: int, device: str, loss_fn=None) -> dict:
    """Mean loss over eval_iters random batches of each split, without dropout.  `loss_fn` is a
    make_eval_loss(model) kept across evaluations (so its capture is made once); by default the
    model runs eagerly."""
    loss_fn = loss_fn or make_eval_loss(model, use_jit=False)
    model.eval()
    out = {}
    try:
        with no_grad():
            for split in ("train", "val"):
                losses = []
                for _ in range(eval_iters):
                    x, y = data.get_batch(split)
                    losses.append(loss_fn(Tensor(x, device=device), Tensor(y, device=device)).item())
                out[split] = float(np.mean(losses))
    finally:
        model.train()
    return out


def saved_train_config(out_dir: str) -> dict:
    """The settings of the run in out_dir (from last/state.json), checked against TrainConfig."""
    path = resolve(os.path.join(out_dir, "last"))
    meta = read_state(path, for_resume=True)
    where = f"{os.path.join(path, 'state.json')}: train_config"
    saved = check_fields(meta["train_config"], TrainConfig, where)
    for name in MODEL_FIELDS:
        if name in saved and name in meta["config"] and saved[name] != meta["config"][name]:
            raise CheckpointError(f"{where}: {name} is {saved[name]} but the model's config says "
                                  f"{meta['config'][name]}; restore the file")
    return saved


def _log_rows_to_keep(path: str, iter_num: int, evaluated: bool) -> list:
    """The log rows before the checkpoint (a resumed run writes the later ones again)."""
    if not os.path.isfile(path):
        return []
    rows, torn = read_log_rows(path)
    if torn:
        tqdm.write(f"note: dropped the torn last line of {path} (a run killed while writing leaves one)",
                   file=sys.stderr)
    return [r for r in rows if r["iter"] < iter_num or (evaluated and r["iter"] == iter_num)]


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, overwrite: bool = False,
          threads: Optional[int] = None) -> dict:
    """Run (or continue) training as configured; returns a summary dict.  Everything is read
    and checked before the first write, so bad input leaves the out-dir as it was.  Under
    mpiexec every rank calls this; rank 0 alone reads and writes files, and if it dies
    abruptly its watchdog says where the last checkpoint is."""
    world = detect_world()
    watchdog = Watchdog() if world.size > 1 and world.is_root else None
    try:
        return _train(cfg, resume, progress, overwrite, threads, world, watchdog)
    finally:
        if watchdog is not None:
            watchdog.close()


def _read_inputs(cfg: TrainConfig, resume: bool, keep: list):
    """Rank 0's reading: the corpus, and the checkpoint when resuming (its model goes in `keep`)."""
    text, source = load_text(cfg.data)
    if resume:
        model, tokenizer, state = load_checkpoint(os.path.join(cfg.out_dir, "last"), device=cfg.device,
                                                  for_resume=True)
        keep.append(model)
    else:
        tokenizer, state = CharTokenizer.from_text(text), {}
    return tokenizer.encode(text), tokenizer, source, state


def _start(cfg: TrainConfig, resume: bool, overwrite: bool, world):
    """What a run starts from, the same on every rank: rank 0 reads the corpus and any
    checkpoint, and hands the token ids, weights and optimizer moments to the others.
    Returns (ids, tokenizer, source, state, model, optimizer, shards, log rows to keep)."""
    kept, log_rows = [], []

    def read_inputs():                # everything read and checked before rank 0 writes anything
        check_out_dir(cfg.out_dir, resume, overwrite)
        inputs = _read_inputs(cfg, resume, kept)
        if resume:
            log_rows.extend(_log_rows_to_keep(os.path.join(cfg.out_dir, "log.jsonl"), inputs[3]["iter"],
                                              inputs[3]["evaluated"]))
        return inputs
    ids, tokenizer, source, state = world.from_root(read_inputs)
    if kept:
        model = kept[0]
    else:
        Tensor.manual_seed(cfg.seed)
        config = GPTConfig(**state["config"]) if resume else GPTConfig(
            vocab_size=tokenizer.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
            n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias, position_embedding=cfg.position_embedding,
            tie_word_embeddings=cfg.tie_word_embeddings)
        model = GPT(config, device=cfg.device)
    if world.size > 1 and not world.is_root:   # rank 0's weights first: the optimizer lays out the ones it holds
        model.load_state_dict(world.bcast(None))
    optimizer = model.configure_optimizer(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2))
    # shard s = rank * grad_accum + k: this rank's k-th micro-batch of each step, with its own
    # batch generator, so one process accumulating K micro-batches draws what K ranks would
    first = world.rank * cfg.grad_accum
    shards = [CharDataset(ids, cfg.block_size, cfg.batch_size, seed=shard_seed(cfg.seed, first + k))
              for k in range(cfg.grad_accum)]
    if resume:
        if world.is_root:
            load_optimizer_state(state["path"], optimizer, state)
        for s, shard in enumerate(shards, start=first):     # a shard the saved run lacked: a new stream
            shard.set_rng_state(data_rng_state(state, s) or
                                np.random.default_rng([cfg.seed, s, state["iter"]]).bit_generator.state)
        Tensor._seed, Tensor._rng_counter = state["minigrad_rng"]["seed"], state["minigrad_rng"]["counter"]
    if world.size > 1:                # every rank starts from rank 0's weights and moments
        if world.is_root:
            world.bcast(model.state_dict())
        moments = world.bcast((optimizer.state_dict() if resume else None) if world.is_root else None)
        if not world.is_root and moments is not None:
            optimizer.load_state_dict(moments)
        Tensor._seed = rank_seed(Tensor._seed, world.rank)      # each rank its own dropout masks
    return ids, tokenizer, source, state, model, optimizer, shards, log_rows


def _train(cfg: TrainConfig, resume: bool, progress: bool, overwrite: bool, threads, world, watchdog) -> dict:
    log_path = os.path.join(cfg.out_dir, "log.jsonl")
    if watchdog is not None:
        watchdog.say("gpt train: a rank died or was killed (mpiexec's report above says which), so the job "
                     "stopped before this run wrote a checkpoint")
    if cfg.device == "cl":
        world.choose_opencl_device()
    ids, tokenizer, source, state, model, optimizer, shards, log_rows = _start(cfg, resume, overwrite, world)
    data = shards[0]                  # also feeds the evaluation (on rank 0)

    iter_num, evaluated, best_val, elapsed_before = 0, False, float("inf"), 0.0
    if resume:
        iter_num, evaluated = state["iter"], state["evaluated"]
        best_val, elapsed_before = state.get("best_val_loss", float("inf")), state.get("elapsed_s", 0.0)
    # every input is read and checked: from here on rank 0 changes the out-dir
    if world.is_root:
        os.makedirs(cfg.out_dir, exist_ok=True)
        if resume:
            write_log_rows(log_path, log_rows)
        elif overwrite:
            remove_run(cfg.out_dir)

    def checkpoint(names, at_iter: int, done_eval: bool) -> None:
        """Every rank calls this (it gathers the ranks' batch generators); rank 0 writes."""
        digest = parameters_digest([p.numpy() for p in model.parameters()]) if world.size > 1 else None
        gathered = world.gather(([shard.rng_state() for shard in shards], digest))
        digests = world.bcast([d for _, d in gathered] if world.is_root else None)
        if len(set(digests)) > 1:
            raise DistributedError(f"the ranks' weights differ at iteration {at_iter} (sha256 "
                                   f"{', '.join(d[:12] for d in digests)}); they must stay identical")
        if not world.is_root:
            return
        shard_states = [st for rank_states, _ in gathered for st in rank_states]
        extra = {"param_digests": digests} if world.size > 1 else {}
        for name in names:
            save_checkpoint(os.path.join(cfg.out_dir, name), model, optimizer, tokenizer, {
                "iter": at_iter, "evaluated": done_eval, "best_val_loss": best_val,
                "elapsed_s": elapsed_before + time.perf_counter() - t_start, "data_rng": shard_states[0],
                "data_rng_shards": shard_states, "world_size": world.size,
                "train_config": dataclasses.asdict(cfg), "data_source": source, **extra})
        if watchdog is not None:
            watchdog.say(f"gpt train: a rank died or was killed (mpiexec's report above says which), so the job "
                         f"stopped; the last checkpoint, iteration {at_iter}, is intact in "
                         f"{os.path.join(cfg.out_dir, 'last')}; continue with: mpiexec -n {world.size} "
                         f"python -m gpt train --out-dir {cfg.out_dir} --resume")

    combining = cfg.grad_accum * world.size > 1
    if combining:
        step = CombiningStep(model, optimizer, cfg.grad_clip, cfg.jit, world, cfg.grad_accum)
    else:
        step = make_train_step(model, optimizer, cfg.grad_clip, use_jit=cfg.jit)
    eval_loss = make_eval_loss(model, use_jit=cfg.jit)

    n_params = model.num_parameters()
    tokens_per_step = cfg.batch_size * cfg.grad_accum * world.size * cfg.block_size
    if world.is_root:
        tqdm.write(f"data: {source} ({len(ids):,} tokens, vocab {tokenizer.vocab_size}); model: {n_params:,} "
                   f"parameters; device {cfg.device}" + (f", {threads} BLAS threads" if threads else "") +
                   (f"; resuming at iteration {iter_num}" if resume else ""))
        tqdm.write(f"global batch: {cfg.batch_size} sequences x {cfg.grad_accum} accumulated x {world.size} "
                   f"rank(s) = {cfg.batch_size * cfg.grad_accum * world.size} sequences, {tokens_per_step:,} "
                   f"tokens per step")
    t_start = time.perf_counter()
    train_time, train_steps = 0.0, 0          # since the last eval, for tokens/s
    allreduce_before = 0.0
    smooth_tps = None
    bar = tqdm(total=cfg.max_iters, initial=iter_num, disable=not (progress and world.is_root),
               dynamic_ncols=True, unit="it")
    status = "finished"
    stop_votes = 0
    try:
        with StopFlag() as stop:
            while True:
                lr = lr_at(cfg, iter_num)
                optimizer.lr = lr
                if (iter_num % cfg.eval_interval == 0 or iter_num == cfg.max_iters) and not evaluated:
                    losses = world.from_root(lambda: estimate_loss(model, data, cfg.eval_iters, cfg.device, eval_loss))
                    if not all(math.isfinite(v) for v in losses.values()):
                        raise TrainingStopped(f"evaluation loss is not finite at iteration {iter_num} "
                                              f"(train {losses['train']}, val {losses['val']})")
                    if world.is_root:
                        row = {"iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr,
                               "elapsed_s": round(elapsed_before + time.perf_counter() - t_start, 3),
                               "tokens_per_s": round(tokens_per_step * train_steps / train_time, 1)
                               if train_steps else None}
                        if world.size > 1:
                            row["allreduce_ms"] = round(1000 * (world.allreduce_seconds - allreduce_before)
                                                        / train_steps, 3) if train_steps else None
                        with open(log_path, "a") as f:
                            f.write(json.dumps(row) + "\n")
                        plot_runs([cfg.out_dir], os.path.join(cfg.out_dir, "loss.png"), title=f"{cfg.out_dir} loss")
                        bar.write(f"iter {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                    train_time, train_steps, allreduce_before = 0.0, 0, world.allreduce_seconds
                    names = ["last"]
                    if losses["val"] < best_val:
                        best_val = losses["val"]
                        names.insert(0, "best")
                    checkpoint(names, iter_num, True)
                    evaluated = True
                if iter_num >= cfg.max_iters:
                    break
                if stop.requested if world.size == 1 else stop_votes:
                    checkpoint(["last"], iter_num, evaluated)
                    status = "interrupted"
                    break
                evaluated = False
                t0 = time.perf_counter()
                if combining:
                    loss_value, stop_votes = step([shard.get_batch("train") for shard in shards], stop.requested)
                else:
                    x, y = data.get_batch("train")
                    loss_value = step(Tensor(x, device=cfg.device), Tensor(y, device=cfg.device)).item()
                if not math.isfinite(loss_value):
                    raise TrainingStopped(f"the training loss became {loss_value} at iteration {iter_num}")
                dt = time.perf_counter() - t0
                train_time, train_steps = train_time + dt, train_steps + 1
                tps = tokens_per_step / dt
                smooth_tps = tps if smooth_tps is None else 0.9 * smooth_tps + 0.1 * tps
                iter_num += 1
                bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{smooth_tps:,.0f}", lr=f"{lr:.2e}")
                bar.update(1)
    except TrainingStopped as e:
        bar.close()
        try:
            last = resolve(os.path.join(cfg.out_dir, "last"))
            kept = f"the last good checkpoint is kept in {last}"
        except Exception:
            kept = "no checkpoint was written before it"
        raise TrainingStopped(f"{e}; stopping without saving ({kept}). "
                              f"Try a lower --lr or --grad-clip, then --resume.") from None
    bar.close()
    return {"status": status, "iter": iter_num, "best_val_loss": best_val, "out_dir": cfg.out_dir}
