"""The system C compiler, for the compiled CPU path: C source in, functions callable from Python out.

    compiler = Compiler.find()          # None if no C compiler works here (Compiler.why_not says why)
    functions = compiler.build({"k_1a2b": source_of_k_1a2b, ...})    # name -> ctypes function

Sources are compiled with `cc -O3 -march=native` into shared libraries cached on disk by a hash
of the source, the flags, the compiler and the CPU: a second run, or a second process, loads them
without compiling.  The CPU is in the hash because -march=native code for one CPU may not run on
another.  A build of many functions is split across the cores, one compiler process per part.
Kernels run their loops on a pool of threads (c_runtime.py), built here once and handed to
each library as it loads.

MINIGRAD_CC names the compiler (default: $CC, else cc); MINIGRAD_CACHE the cache folder
(default: ~/.cache/minigrad).
"""
import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

from . import c_runtime

# Our kernels use OpenCL's spellings (c_like.py); these make them C.  tgmath.h gives exp, log, sqrt
# and erf for float and double alike, as OpenCL has them.
PRELUDE = """#include <tgmath.h>
#include <stdint.h>
#include <stdlib.h>
typedef unsigned char uchar;
typedef unsigned int uint;
"""

# glibc's libmvec has SIMD versions of the float functions; declared like this, the compiler
# vectorizes a loop that calls them (glibc's own headers do so only under -ffast-math, which we
# avoid: it would break inf and NaN).  Used only where a test build shows it links.
VECTOR_MATH = "".join(f"{t} ({f})({t}) __attribute__((simd(\"notinbranch\")));\n"
                      for t, suffix in (("float", "f"), ("double", ""))
                      for f in (f"exp{suffix}", f"log{suffix}", f"sin{suffix}", f"erf{suffix}"))

PROBE = "float probe(float* x, int n) { float s = 0; for (int i = 0; i < n; i++) s += exp(x[i]) + erf(x[i]); return s; }\n"


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        import platform
        return platform.processor() + platform.machine()


def cache_dir() -> str:
    return os.environ.get("MINIGRAD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minigrad")


class CompileError(ValueError):
    """The compiler failed on a kernel, or its libraries cannot be written or loaded: one line that
    says how to go on (the CLI reports ValueErrors that way)."""


class Compiler:
    """A C compiler that works here, with the flags it was found to accept."""
    why_not: Optional[str] = None          # set by find() when no compiler works
    _found = None

    def __init__(self, cc: str, flags: List[str], libs: List[str], vector_math: bool, version: str):
        self.cc, self.flags, self.libs = cc, flags, libs
        self.vector_math, self.version = vector_math, version
        self.prelude = PRELUDE + (VECTOR_MATH if vector_math else "") + c_runtime.KERNEL_PRELUDE
        key = "\n".join([cc, version, " ".join(flags + libs), self.prelude, _cpu_identity()])
        self.key = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.folder = os.path.join(cache_dir(), "c", self.key)
        self.compiles = 0                  # compiler runs in this process (a warm cache needs none)
        self.runtime = None                # the thread pool's library, built on first use

    def describe(self) -> str:
        math_kind = "vector math (libmvec)" if self.vector_math else "scalar math"
        arch = [f for f in self.flags if f.startswith("-march")]
        return f"{(self.version.splitlines() or [self.cc])[0]}, {' '.join(['-O3'] + arch)}, {math_kind}"

    def thread_count(self) -> int:
        self._runtime()
        return self.threads

    def set_threads(self, n: int) -> int:
        """How many threads compiled kernels use (the pool starts more if needed); returns it."""
        self.threads = self._runtime().mg_set_threads(int(n))
        return self.threads

    def _runtime(self):
        if self.runtime is None:
            runtime = self._library(c_runtime.SOURCE, extra_flags=["-pthread"], with_prelude=False)
            runtime.mg_set_threads.argtypes, runtime.mg_set_threads.restype = [ctypes.c_int], ctypes.c_int
            from ..threads import physical_cores
            self.threads = runtime.mg_set_threads(physical_cores())
            self.runtime = runtime
        return self.runtime

    # ---- finding one -----------------------------------------------------------------
    @classmethod
    def find(cls) -> Optional["Compiler"]:
        """The first working setup of the compiler, tried from most to least capable; None when
        nothing compiles (cls.why_not then says what failed).  Probed once per process."""
        if cls._found is None:
            cls._found = cls._probe() or False
        return cls._found or None

    @classmethod
    def _probe(cls) -> Optional["Compiler"]:
        name = os.environ.get("MINIGRAD_CC") or os.environ.get("CC") or "cc"
        words = shlex.split(name) or ["cc"]                  # CC="ccache gcc" is a command with an argument
        found = shutil.which(words[0])
        if found is None:
            cls.why_not = f"no C compiler: {words[0]!r} is not on PATH (install gcc or clang, or set MINIGRAD_CC)"
            return None
        cc = " ".join([found] + words[1:])
        try:
            done = subprocess.run([*shlex.split(cc), "--version"], capture_output=True, text=True, timeout=30)
            version = (done.stdout or done.stderr).strip() or cc
        except (OSError, subprocess.SubprocessError) as e:
            cls.why_not = f"{cc} --version failed: {e}"
            return None
        # -fopenmp-simd: only OpenMP's `simd` pragmas (a vectorized sum), no OpenMP runtime.
        # -ffp-contract=off: no a*b+c fused into one rounding, as numpy does not: then a kernel gives
        # the same bits alone or inside a multi-output kernel (where another kernel's product may
        # meet its sum), so a replay equals the eager step.
        base = ["-O3", "-fPIC", "-shared", "-fno-math-errno", "-fopenmp-simd", "-ffp-contract=off", "-std=gnu11"]
        # No peeling of loop iterations to reach an aligned address: where a loop's vector part
        # starts would then depend on where numpy put the array, and with it (through exp's vector
        # and scalar versions) the last bits of a result.  GCC's spelling; other compilers go without.
        no_peeling = ["--param", "vect-max-peeling-for-alignment=0"]
        last_error = ""
        for extra in (["-march=native"] + no_peeling, ["-march=native"], no_peeling, []):
            for vector_math in (True, False):
                flags, libs = base + extra, (["-lmvec"] if vector_math else [])
                probe = PRELUDE + (VECTOR_MATH if vector_math else "") + PROBE
                error = _try_build(cc, flags, libs, probe)
                if error is None:
                    return cls._with_cache(cls(cc, flags, libs, vector_math, version))
                last_error = error
        first_line = (last_error.strip().splitlines() or ["?"])[0]
        cls.why_not = f"{cc} could not build a test library: {first_line}"
        return None

    @classmethod
    def _with_cache(cls, compiler: "Compiler") -> Optional["Compiler"]:
        """The compiler, if its cache folder can be written (a read-only home would otherwise fail
        at the first kernel); else None, and why_not says where to point MINIGRAD_CACHE."""
        try:
            os.makedirs(compiler.folder, exist_ok=True)
            tempfile.TemporaryFile(dir=compiler.folder).close()
        except OSError as e:
            cls.why_not = (f"the kernel cache {compiler.folder} cannot be written ({e.strerror}): set "
                           f"MINIGRAD_CACHE to a writable folder")
            return None
        return compiler

    # ---- building ----------------------------------------------------------------------
    def build(self, sources: Dict[str, str], prelude: str = "") -> Dict[str, object]:
        """name -> ctypes function for C functions `name` (each source defines one, after
        `prelude`, the definitions they share).  Libraries
        come from the disk cache when built before; otherwise the sources are split into one
        part per core, compiled in parallel, and cached."""
        names = sorted(sources)
        if not names:
            return {}
        parts = min(len(names), max(1, os.cpu_count() or 1), max(1, len(names) // 8))
        groups = [names[i::parts] for i in range(parts)]
        self._runtime()
        with ThreadPoolExecutor(parts) as pool:
            libraries = list(pool.map(lambda group: self._library(prelude + "".join(sources[n] for n in group)), groups))
        self._prune()
        return {n: getattr(lib, n) for group, lib in zip(groups, libraries) for n in group}

    MAX_CACHED = 4096                      # libraries kept on disk; beyond, the oldest half goes

    def _prune(self) -> None:
        """Keep the disk cache from growing without end (every new shape is a new library): past
        MAX_CACHED files, delete the least recently written half.  A library already loaded stays
        usable (the system keeps a deleted file's mapping); one needed again is built again."""
        try:
            files = [os.path.join(self.folder, f) for f in os.listdir(self.folder) if f.endswith(".so")]
            if len(files) <= self.MAX_CACHED:
                return
            for path in sorted(files, key=os.path.getmtime)[:len(files) // 2]:
                os.remove(path)
        except OSError:                       # another process pruning at the same time
            pass

    def cache_summary(self) -> str:
        """How many libraries the cache holds and their size, for `python -m minigrad`."""
        try:
            sizes = [os.path.getsize(os.path.join(self.folder, f)) for f in os.listdir(self.folder)]
        except OSError:
            sizes = []
        return f"{len(sizes)} libraries, {sum(sizes) / 2**20:.1f} MB"

    def _library(self, body: str, extra_flags=(), with_prelude=True):
        source = self.prelude + body if with_prelude else body
        flags = self.flags + list(extra_flags)
        digest = hashlib.sha256((" ".join(flags) + source).encode()).hexdigest()[:24]
        path = os.path.join(self.folder, f"{digest}.so")
        library = None
        if os.path.exists(path):
            try:
                library = ctypes.CDLL(path)
            except OSError:                          # a damaged file (a crash mid-write elsewhere): build again
                library = None
        if library is None:
            try:
                os.makedirs(self.folder, exist_ok=True)
            except OSError as e:
                raise CompileError(f"cannot write compiled kernels to {self.folder} ({e.strerror}); set "
                                   f"MINIGRAD_CACHE to a writable folder, or MINIGRAD_CPU=numpy") from None
            error = _try_build(self.cc, flags, self.libs, source, path)
            self.compiles += 1
            if error is not None:
                what = "kernel" if with_prelude else "thread pool"
                raise CompileError(f"the C compiler failed on a {what} ({(error.strip().splitlines() or ['?'])[0]}); "
                                   f"set MINIGRAD_CPU=numpy to run without compiling, and please report this")
            try:
                library = ctypes.CDLL(path)
            except OSError as e:
                raise CompileError(f"cannot load a compiled kernel from {self.folder} ({e}); set MINIGRAD_CACHE "
                                   f"to a folder programs may run from, or MINIGRAD_CPU=numpy") from None
        if with_prelude:
            library.mg_use_runtime(ctypes.cast(self._runtime().mg_parallel, ctypes.c_void_p))
        return library


def _try_build(cc: str, flags: List[str], libs: List[str], source: str, path: Optional[str] = None) -> Optional[str]:
    """Compile `source` to a shared library at `path` (a throwaway one when None); None on
    success, else the compiler's message.  The library appears at `path` whole or not at all
    (written beside it, then renamed), so processes sharing a cache never load half a file."""
    with tempfile.TemporaryDirectory(prefix="minigrad-cc-") as tmp:
        c_file = os.path.join(tmp, "k.c")
        out = os.path.join(tmp, "k.so")
        with open(c_file, "w") as f:
            f.write(source)
        try:
            result = subprocess.run([*shlex.split(cc), *flags, c_file, "-o", out, *libs, "-lm"],
                                    capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            return str(e)
        if result.returncode != 0:
            return result.stderr or result.stdout or f"exit status {result.returncode}"
        if path is None:
            try:
                ctypes.CDLL(out)                  # it must load, too (libmvec found)
            except OSError as e:
                return str(e)
            return None
        try:
            handle, partial = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            with os.fdopen(handle, "wb") as f, open(out, "rb") as built:
                shutil.copyfileobj(built, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)               # whole or not at all, for every process sharing the cache
        except OSError as e:
            return f"cannot write {path}: {e.strerror}"
    return None


if __name__ == "__main__":
    c = Compiler.find()
    print(c.describe() if c else Compiler.why_not, file=sys.stdout)
