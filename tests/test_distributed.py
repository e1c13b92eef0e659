"""Data-parallel training over MPI, run for real: `mpiexec -n 2` against one process that
accumulates the same two micro-batches per step (--grad-accum 2).

Tolerance: the two runs add the same float32 gradients, but an allreduce is free to add
them in another order than a loop does (with more ranks, a tree), and float32 addition is
not associative: each reordered sum may differ by an ulp (2^-24 relative), which the
training dynamics carry into later losses.  rtol 1e-5 on losses over a few steps covers
that, and is far below what a lost or doubled micro-batch does (1e-2 here).  With two
ranks the sums happen to be the same (a + b = b + a), and the checkpoints come out equal.
"""
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from gpt.checkpoint import load_checkpoint
from gpt.data import pystdlib_text
from gpt.distributed import GradientBuckets, parameters_digest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--preset", "tiny", "--data", "pystdlib", "--eval-iters", "2", "--no-progress"]


def mpiexec():
    """The mpiexec the mpich wheel installed for this Python (in its scripts folder, the MPI
    mpi4py loads), else the one on PATH."""
    wheel = os.path.join(sysconfig.get_path("scripts"), "mpiexec")
    return wheel if os.path.exists(wheel) else "mpiexec"


def env(**extra):
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


def gpt_train(args, ranks=1, timeout=120, **extra_env):
    launcher = [mpiexec(), "-n", str(ranks)] if ranks > 1 else []
    return subprocess.run(launcher + [sys.executable, "-m", "gpt", "train", *TINY, *args], capture_output=True,
                          text=True, env=env(**extra_env), timeout=timeout, cwd=ROOT)


def log_rows(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def losses(rows):
    return np.array([[r["train_loss"], r["val_loss"]] for r in rows])


def test_two_ranks_equal_one_rank_accumulating_two(tmp_path):
    """The acceptance run: same global batch (8 x 2) and seed, same loss curve, the same
    weights on both ranks; then the 2-rank checkpoint resumed by one process (any N)
    continues exactly as the uninterrupted single-process run."""
    single, ranks = str(tmp_path / "single"), str(tmp_path / "ranks")
    ref = gpt_train(["--grad-accum", "2", "--max-iters", "8", "--eval-interval", "4", "--out-dir", single])
    assert ref.returncode == 0, ref.stderr
    two = gpt_train(["--max-iters", "4", "--eval-interval", "4", "--out-dir", ranks], ranks=2)
    assert two.returncode == 0, two.stderr
    assert "16 sequences, 512 tokens per step" in two.stdout and "x 2 rank(s)" in two.stdout
    assert two.stdout.count("iter 4:") == 1                       # rank 0 alone prints
    ref_rows, two_rows = log_rows(single), log_rows(ranks)
    assert [r["iter"] for r in two_rows] == [0, 4]
    np.testing.assert_allclose(losses(two_rows), losses(ref_rows[:2]), rtol=1e-5)

    # every rank's weights: each rank's sha256 is in the checkpoint; the saved weights have it
    state = json.load(open(os.path.join(ranks, "last", "state.json")))
    model, _, _ = load_checkpoint(os.path.join(ranks, "last"))
    assert state["param_digests"] == [parameters_digest([p.numpy() for p in model.parameters()])] * 2
    assert len(state["data_rng_shards"]) == 2

    resumed = gpt_train(["--grad-accum", "2", "--max-iters", "8", "--out-dir", ranks, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_allclose(losses(log_rows(ranks)), losses(ref_rows), rtol=1e-5)
    a, b = load_file(os.path.join(single, "last", "model.safetensors")), \
        load_file(os.path.join(ranks, "last", "model.safetensors"))
    # Each rank ran on one thread and the single process on two: BLAS (and so every gradient) sums
    # in a thread-dependent order, and AdamW's m / sqrt(v) turns a last-bit difference in a gradient
    # near 0 into one of up to a few lr * 1e-3 in its weight; 1e-5 is far below any real mistake.
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_ranks_and_accumulation_mixed_stay_within_float32_noise(tmp_path):
    """2 ranks x 2 micro-batches against 1 x 4: the same batches, but MPI adds the ranks'
    sums, (a + b) + (c + d) against ((a + b) + c) + d, so the last bits may differ."""
    mixed, single = str(tmp_path / "mixed"), str(tmp_path / "single")
    args = ["--max-iters", "4", "--eval-interval", "4"]
    r = gpt_train([*args, "--grad-accum", "2", "--out-dir", mixed], ranks=2)
    assert r.returncode == 0, r.stderr
    assert "8 sequences x 2 accumulated x 2 rank(s) = 32 sequences" in r.stdout
    r = gpt_train([*args, "--grad-accum", "4", "--out-dir", single])
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(losses(log_rows(mixed)), losses(log_rows(single)), rtol=1e-5)
    a, b = load_file(os.path.join(single, "last", "model.safetensors")), \
        load_file(os.path.join(mixed, "last", "model.safetensors"))
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-5, err_msg=name)


def two_machines(tmp_path):
    """Two folders that stand for two machines: rank 0 works in the first, which holds the
    corpus, rank 1 in the second, empty.  Relative --data and --out-dir then name different
    places for the two ranks, as they would on two machines."""
    first, second = tmp_path / "machine0", tmp_path / "machine1"
    first.mkdir()
    second.mkdir()
    (first / "corpus.txt").write_text(pystdlib_text()[:200_000])
    return first, second


def mpmd_train(machines, args):
    """`mpiexec -n 1 -wdir machine0 gpt train ... : -n 1 -wdir machine1 gpt train ...`"""
    one = [sys.executable, "-m", "gpt", "train", *TINY, "--data", "corpus.txt", "--out-dir", "run", *args]
    return [mpiexec(), "-n", "1", "-wdir", str(machines[0]), *one, ":", "-n", "1", "-wdir", str(machines[1]), *one]


def rank_pid(rank, cwd):
    """The pid of the gpt process of rank `rank` working in `cwd`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            here = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if b"-m\0gpt\0" in cmdline and here == str(cwd) and f"PMI_RANK={rank}".encode() in environ:
            return int(pid)
    return None


def signal_rank_1(machines, signum, eval_interval, settle=0.0):
    """Start a long 2-rank job, wait for its first checkpoint (and `settle` seconds more),
    send rank 1 `signum`; the job's (returncode, stderr)."""
    cmd = mpmd_train(machines, ["--max-iters", "100000", "--eval-interval", str(eval_interval)])
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (machines[0] / "run" / "last" / "state.json").exists():
            time.sleep(0.2)
        time.sleep(settle)
        pid = rank_pid(1, machines[1])
        assert pid is not None, "rank 1 not found"
        os.kill(pid, signum)
        _, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    return job.returncode, stderr


def test_killed_rank_stops_the_job_and_resume_continues(tmp_path):
    """Also: rank 1's machine needs neither the corpus nor the run folder, even to resume."""
    machines = two_machines(tmp_path)
    last = machines[0] / "run" / "last"
    returncode, stderr = signal_rank_1(machines, signal.SIGKILL, eval_interval=5)
    assert returncode != 0
    said = [line for line in stderr.splitlines() if line.startswith("gpt train: a rank died or was killed")]
    assert len(said) == 1, stderr                                 # rank 0's watchdog, once
    state = json.load(open(last / "state.json"))
    assert f"iteration {state['iter']}, is intact in {os.path.join('run', 'last')}" in said[0]
    assert "--resume" in said[0]
    load_checkpoint(str(last))                                    # whole and loadable
    more = subprocess.run(mpmd_train(machines, ["--max-iters", str(state["iter"] + 3), "--resume"]),
                          capture_output=True, text=True, env=env(), timeout=120)
    assert more.returncode == 0, more.stderr
    assert f"resuming at iteration {state['iter']}" in more.stdout
    assert json.load(open(last / "state.json"))["iter"] == state["iter"] + 3
    assert os.listdir(machines[1]) == []                          # rank 1 wrote nothing


def test_a_rank_failing_alone_ends_the_job(tmp_path):
    """A crash on one rank (here rank 1's OpenCL device is missing) must not leave rank 0
    waiting for it forever: the crash aborts the job (MPI_Abort), its traceback says why."""
    one = [sys.executable, "-m", "gpt", "train", *TINY, "--device", "cl", "--out-dir", str(tmp_path / "run")]
    r = subprocess.run([mpiexec(), "-n", "1", *one, ":", "-n", "1", "-env", "MINIGRAD_CL_DEVICE", "no-such-gpu",
                        *one], capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode != 0
    assert "MINIGRAD_CL_DEVICE='no-such-gpu:1' matches none" in r.stderr          # rank 1's own device
    assert "MPI_Abort" in r.stderr


def test_sigterm_to_one_rank_saves_and_stops_every_rank(tmp_path):
    """`kill <pid>` of one rank (or a scheduler's SIGTERM): the ranks vote through the
    gradient allreduce, all stop at the same step, and rank 0 saves it."""
    machines = two_machines(tmp_path)
    returncode, stderr = signal_rank_1(machines, signal.SIGTERM, eval_interval=1000, settle=1.0)
    state = json.load(open(machines[0] / "run" / "last" / "state.json"))
    assert state["iter"] > 0 and not state["evaluated"]
    assert f"stopped at iteration {state['iter']}; continue with: mpiexec -n 2 python -m gpt train" in stderr
    assert returncode == 130, stderr


MISSING_MPI4PY = ("import sys; sys.modules['mpi4py'] = None\n"      # what an uninstalled package does
                  "from gpt.cli import main; sys.exit(main(sys.argv[1:]))")


def test_launched_without_mpi4py_says_what_to_install(tmp_path):
    out = tmp_path / "never"
    r = subprocess.run([sys.executable, "-c", MISSING_MPI4PY, "train", *TINY, "--out-dir", str(out)],
                       capture_output=True, text=True, env=env(PMI_SIZE="2", PMI_RANK="0"), timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "gpt train: error: mpiexec started 2 processes but mpi4py is not installed: "
        "pip install 'minigrad[mpi]' (mpi4py and the mpich wheel)"]
    assert not out.exists()


def test_mpi4py_without_an_mpi_library_is_one_line_from_rank_0(tmp_path):
    out = tmp_path / "never"
    r = gpt_train(["--out-dir", str(out)], ranks=2, MPI4PY_LIBMPI="/nonexistent/libmpi.so")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpt train: error: mpi4py found no MPI library"), r.stderr
    assert "pip install mpich" in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()


def test_gradient_buckets_hold_every_gradient_once_in_a_few_large_buffers():
    shapes = [(100, 50), (50,), (200, 10), (7,), (300, 30)]          # 5000, 50, 2000, 7, 9000 floats
    buckets = GradientBuckets(shapes, extra=2, bucket_bytes=4 * 7000)
    assert buckets.groups == [[0, 1], [2, 3], [4]]                   # filled in order, none over the cap
    assert buckets.lengths == [5050, 2007, 9000]                     # a tensor larger than the cap: alone
    assert [len(b) for b in buckets.buffers] == [5050, 2007, 9002]
    buckets.extras[:] = (3.0, 1.0)
    assert buckets.buffers[-1][-2:].tolist() == [3.0, 1.0]
    assert [g.base is b for g, b in zip(buckets.gradients(), buckets.buffers)] == [True] * 3


def test_ranks_on_one_machine_each_take_their_own_opencl_device(monkeypatch):
    from gpt.distributed import World
    for wish, expected in ((None, ":1"), ("gpu", "gpu:1"), ("nvidia", "nvidia:1"), ("gpu:3", "gpu:3")):
        if wish is None:
            monkeypatch.delenv("MINIGRAD_CL_DEVICE", raising=False)
        else:
            monkeypatch.setenv("MINIGRAD_CL_DEVICE", wish)
        World(rank=3, size=4, local_rank=1, local_size=2).choose_opencl_device()
        assert os.environ["MINIGRAD_CL_DEVICE"] == expected            # a chosen index is the user's
    monkeypatch.setenv("MINIGRAD_CL_DEVICE", "gpu")
    World(rank=1, size=2, local_rank=0, local_size=1).choose_opencl_device()   # alone on its machine
    assert os.environ["MINIGRAD_CL_DEVICE"] == "gpu"


def test_bad_input_under_mpiexec_is_one_line_from_rank_0_and_no_hang(tmp_path):
    """Rank 0 reads the corpus for every rank; when it cannot, the others stop with it."""
    out = tmp_path / "never"
    r = gpt_train(["--data", str(tmp_path / "missing.txt"), "--out-dir", str(out)], ranks=2, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"gpt train: error: data file not found: {tmp_path / 'missing.txt'} "
                                             f"(--data takes a text file path, 'shakespeare' or 'pystdlib')"]
    assert not out.exists()
    r = gpt_train(["--grad-accum", "0", "--out-dir", str(out)])
    assert r.returncode == 2 and r.stderr.strip() == "gpt train: error: --grad-accum must be at least 1, got 0"


def test_a_foreign_mpiexec_is_named(tmp_path):
    """Open MPI's mpiexec starting a mpi4py built for MPICH: each process would train alone."""
    out = tmp_path / "never"
    r = gpt_train(["--out-dir", str(out)], OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_RANK="0")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpt train: error: the launcher started 2 processes but MPI "
                                                   "sees 1: mpi4py uses another MPI"), r.stderr
    assert not out.exists()
