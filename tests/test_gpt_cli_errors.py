"""What a user who gets something wrong sees: on a real run folder made by the CLI, each
mistake gives one line naming the file or flag and what to do, a non-zero exit code, and
leaves every file on disk as it was.  Most cases run gpt.cli.main in-process; a few run
`python -m gpt` for real to check that no traceback escapes."""
import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import minigrad.backends
from gpt.checkpoint import save_checkpoint
from gpt.cli import build_parser, main, nanogpt_spellings, resolve_train_config
from gpt.data import CharTokenizer
from gpt.model import GPT, GPTConfig
from minigrad.backends.opencl import INSTALL_HINT
from minigrad.doctor import report
from minigrad.threads import blas_threads, physical_cores
from run_folders import TINY, copy_run, make_run, snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("made"))


@pytest.fixture
def run(made_run, tmp_path):
    """A private copy of the tiny run, free to damage."""
    return copy_run(made_run, tmp_path)


def fails_with(argv, capsys, expected, folder):
    """main(argv) exits 2 printing exactly `expected` (a string, or a compiled regex) and
    changes nothing under folder."""
    before = snapshot(folder)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    if isinstance(expected, str):
        assert err == expected + "\n"
    else:
        assert expected.fullmatch(err.rstrip("\n")), err
    assert snapshot(folder) == before


def resume(run, *extra):
    return ["train", "--out-dir", run, "--resume", "--no-progress", *extra]


def last_state(run):
    with open(os.path.join(run, "last", "state.json")) as f:
        return json.load(f)


# ---- data loss -------------------------------------------------------------------------
def test_train_refuses_a_folder_that_holds_a_run(run, capsys):
    state = last_state(run)
    fails_with(["train", "--out-dir", run, "--data", "pystdlib", *TINY], capsys,
               f"gpt train: error: --out-dir {run} (iteration {state['iter']}, best val loss "
               f"{state['best_val_loss']:.4f}) already holds a run: continue it with --resume, or start over "
               f"with --overwrite (deletes its log and checkpoints)", run)
    fails_with(["train", "--out-dir", run, "--resume", "--overwrite"], capsys,
               "gpt train: error: --resume continues the run in --out-dir and --overwrite deletes it: choose one",
               run)


def test_overwrite_starts_over(run):
    corpus = last_state(run)["train_config"]["data"]
    assert main(["train", "--out-dir", run, "--data", corpus, "--max-iters", "2", "--overwrite", *TINY]) == 0
    with open(os.path.join(run, "log.jsonl")) as f:
        assert [json.loads(line)["iter"] for line in f] == [0, 2]        # the old rows are gone
    assert last_state(run)["iter"] == 2


def test_out_dir_that_is_a_file_or_cannot_be_created(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    fails_with(["train", "--out-dir", str(a_file), "--preset", "tiny"], capsys,
               f"gpt train: error: --out-dir {a_file} is a file, not a folder: choose another --out-dir", tmp_path)
    fails_with(["train", "--out-dir", str(a_file / "run"), "--preset", "tiny"], capsys,
               f"gpt train: error: cannot create --out-dir {a_file / 'run'}: {a_file} is a file, not a folder",
               tmp_path)


def test_resume_refuses_a_loss_plot_it_could_not_write(run, capsys):
    os.remove(os.path.join(run, "loss.png"))
    os.mkdir(os.path.join(run, "loss.png"))
    fails_with(resume(run), capsys, f"gpt train: error: cannot write {run}/loss.png: move it away or fix its "
               f"permissions", run)


def run_cli(*args, env=None):
    """`python -m gpt ...` in a fresh process."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])), **(env or {})}
    return subprocess.run([sys.executable, "-m", "gpt", *args], capture_output=True, text=True, timeout=120,
                          env=environment)


@contextlib.contextmanager
def unprivileged():
    """root may write anywhere: as root, act as the user `nobody` inside the block."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_resume_in_a_folder_that_cannot_be_written(made_run, capsys):
    """Checked before any training, so no steps are lost."""
    shared = tempfile.mkdtemp()                       # a folder `nobody` can reach
    try:
        os.chmod(shared, 0o755)
        run = copy_run(made_run, shared)
        os.chmod(run, 0o555)
        with unprivileged():
            fails_with(resume(run), capsys, f"gpt train: error: --out-dir {run} is not writable: a run could not "
                       f"save there; fix the permissions or choose another --out-dir", run)
    finally:
        os.chmod(os.path.join(shared, "run"), 0o755)
        shutil.rmtree(shared)


# ---- damaged checkpoints ---------------------------------------------------------------
def rewrite_state(checkpoint, change):
    path = os.path.join(checkpoint, "state.json")
    with open(path) as f:
        state = json.load(f)
    change(state)
    with open(path, "w") as f:
        json.dump(state, f)


def truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def poison(path):
    arrays = load_file(path)
    name = sorted(arrays)[0]
    arrays[name].flat[0] = np.nan
    save_file(arrays, path)
    return name


DAMAGED = {   # what is done to the checkpoint -> (action, message after "<checkpoint>/")
    "truncated model": (lambda ck: truncate(f"{ck}/model.safetensors"),
                        r"model\.safetensors is damaged or not a safetensors file \(.+\)"),
    "empty model": (lambda ck: open(f"{ck}/model.safetensors", "wb").close(),
                    r"model\.safetensors is damaged or not a safetensors file \(.+\)"),
    "garbage model": (lambda ck: open(f"{ck}/model.safetensors", "wb").write(bytes(range(256)) * 8),
                      r"model\.safetensors is damaged or not a safetensors file \(.+\)"),
    "NaN in the weights": (lambda ck: poison(f"{ck}/model.safetensors"),
                           r"model\.safetensors holds NaN or inf in \S+ \(the run diverged before this save, "
                           r"or the file is damaged\)"),
    "missing config": (lambda ck: rewrite_state(ck, lambda s: s.pop("config")),
                       re.escape("state.json has no 'config' (the model's shape)")),
    "config of the wrong type": (lambda ck: rewrite_state(ck, lambda s: s["config"].update(n_layer="1")),
                                 re.escape("""state.json: config: 'n_layer' must be an integer, got "1\"""")),
    "unknown config key": (lambda ck: rewrite_state(ck, lambda s: s["config"].update(n_layers=1)),
                           re.escape("state.json: config has an unknown key 'n_layers' (known: " +
                                     ", ".join(f.name for f in dataclasses.fields(GPTConfig)) + ")")),
    "vocabulary shorter than the model": (
        lambda ck: rewrite_state(ck, lambda s: s["tokenizer"].update(chars=s["tokenizer"]["chars"][:-1])),
        r"state\.json: the vocabulary has (\d+) characters but the model (?!\1)\d+ \(config\.vocab_size\)"),
    "not JSON": (lambda ck: open(f"{ck}/state.json", "w").write('{"format_version": 1, "config": {'),
                 r"cannot read .+/state\.json: .+"),
}


@pytest.mark.parametrize("command", ["sample", "resume"])
@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_a_damaged_checkpoint_is_one_line(run, capsys, command, damage):
    """sample reads best/, resume reads last/; the message names the file and the other one."""
    used, other = ("best", "last") if command == "sample" else ("last", "best")
    action, message = DAMAGED[damage]
    action(os.path.join(run, used))
    argv = ["sample", "--out-dir", run, "--num-tokens", "3"] if command == "sample" else resume(run)
    prefix = "" if message.startswith("cannot read") else re.escape(f"{run}/{used}/")
    fails_with(argv, capsys, re.compile(f"gpt {'train' if command == 'resume' else 'sample'}: error: "
                                        f"{prefix}{message}; restore the file, or use the run's other checkpoint: "
                                        f"{re.escape(os.path.join(run, other))}"), run)


def test_resume_with_a_damaged_optimizer_file_or_state(run, capsys):
    last = os.path.join(run, "last")
    truncate(os.path.join(last, "optimizer.safetensors"))
    fails_with(resume(run), capsys, re.compile(re.escape(f"gpt train: error: {last}/optimizer.safetensors is "
                                                         f"damaged or not a safetensors file (") + r".+\); restore "
                                               r"the file, or use the run's other checkpoint: .+/best"), run)
    shutil.copy(os.path.join(run, "best", "optimizer.safetensors"), last)
    rewrite_state(last, lambda s: s.pop("iter"))
    fails_with(resume(run), capsys, f"gpt train: error: {last}/state.json has no 'iter', which resuming needs; "
               f"restore the file, or use the run's other checkpoint: {run}/best", run)
    rewrite_state(last, lambda s: s.update(iter=4, optimizer={"step_count": "4", "lr": 0.001}))
    fails_with(resume(run), capsys, f"gpt train: error: {last}/state.json: 'optimizer' must be an object "
               f"{{\"step_count\": int >= 0, \"lr\": number >= 0}}, got {{\"step_count\": \"4\", \"lr\": 0.001}}; "
               f"restore the file, or use the run's other checkpoint: {run}/best", run)


# ---- the device, the log, sample's numbers ---------------------------------------------
def test_device_cl_without_pyopencl(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyopencl", None)                  # as if it were not installed
    monkeypatch.delitem(minigrad.backends._backends, "cl", raising=False)
    with pytest.raises(ImportError) as missing:
        import pyopencl  # noqa: F401
    expected = (f"--device cl: pyopencl is not installed ({missing.value}); {INSTALL_HINT}; `python -m minigrad` "
                f"reports what works here, --device numpy always does")
    fails_with(["sample", "--out-dir", run, "--device", "cl"], capsys, f"gpt sample: error: {expected}", run)
    fails_with(["train", "--preset", "tiny", "--out-dir", str(tmp_path / "new"), "--device", "cl"], capsys,
               f"gpt train: error: {expected}", tmp_path)


def test_device_cl_without_a_driver(made_run, tmp_path):
    no_drivers = tmp_path / "no-icd"
    no_drivers.mkdir()
    result = run_cli("sample", "--out-dir", made_run, "--device", "cl", env={"OCL_ICD_VENDORS": str(no_drivers)})
    assert result.returncode == 2 and result.stdout == ""
    assert re.fullmatch(re.escape("gpt sample: error: --device cl: no OpenCL platform found (") + r".+\); " +
                        re.escape(f"{INSTALL_HINT}; `python -m minigrad` reports what works here, --device numpy "
                                  f"always does") + "\n", result.stderr), result.stderr


def test_a_torn_last_log_line_is_dropped_on_resume(run, capsys):
    log = os.path.join(run, "log.jsonl")
    with open(log) as f:
        rows = f.read()
    with open(log, "a") as f:
        f.write('{"iter": 6, "train_lo')                  # what a kill during a write leaves
    assert main(resume(run, "--max-iters", "6")) == 0
    assert f"note: dropped the torn last line of {log} (a run killed while writing leaves one)" in \
        capsys.readouterr().err
    with open(log) as f:
        resumed = f.read()
    assert resumed.startswith(rows) and [json.loads(line)["iter"] for line in resumed.splitlines()][-2:] == [4, 6]


def test_an_unreadable_log_line_names_file_and_line(run, capsys):
    log = os.path.join(run, "log.jsonl")
    with open(log) as f:
        lines = f.readlines()
    lines[1] = "not json\n"
    with open(log, "w") as f:
        f.writelines(lines)
    fails_with(resume(run), capsys, f"gpt train: error: {log} line 2 is not a log row (b'not json'); fix or "
               f"delete that line", run)


@pytest.mark.parametrize("flag, value", [("--num-tokens", "-5"), ("--num-samples", "-2"), ("--num-tokens", "0"),
                                         ("--temperature", "-1"), ("--top-k", "0")])
def test_sample_rejects_numbers_out_of_range(run, capsys, flag, value):
    low = 0 if flag == "--temperature" else 1
    got = float(value) if flag == "--temperature" else int(value)
    fails_with(["sample", "--out-dir", run, flag, value], capsys,
               f"gpt sample: error: {flag} must be at least {low}, got {got}", run)


def test_a_failing_command_prints_no_traceback(run):
    """The whole program, not just main(): a damaged checkpoint and a clobbered run."""
    truncate(os.path.join(run, "best", "model.safetensors"))
    result = run_cli("sample", "--out-dir", run)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"gpt sample: error: {run}/best/model.safetensors is damaged")
    assert result.stderr.count("\n") == 1


# ---- habits users bring ----------------------------------------------------------------
def parse(*argv):
    parser = build_parser()
    return parser.parse_args(nanogpt_spellings(parser, list(argv)))


def test_nanogpt_spellings_are_aliases():
    nano = resolve_train_config(parse("train", "--max_iters=10", "--learning_rate", "2e-3", "--n_layer", "3",
                                      "--bias=False", "--eval_interval=5", "--out_dir", "x"))
    ours = resolve_train_config(parse("train", "--max-iters", "10", "--lr", "2e-3", "--n-layer", "3", "--no-bias",
                                      "--eval-interval", "5", "--out-dir", "x"))
    assert nano == ours and (nano.max_iters, nano.lr, nano.n_layer, nano.bias) == (10, 2e-3, 3, False)
    args = parse("sample", "--start", "ROMEO", "--max_new_tokens=7", "--num_samples", "2")
    assert (args.prompt, args.num_tokens, args.num_samples) == ("ROMEO", 7, 2)


def test_an_unknown_flag_suggests_the_nearest(capsys):
    for argv, expected in [(["train", "--max-itres", "3"], "gpt train: error: unknown flag --max-itres; did you "
                                                           "mean --max-iters? (see: gpt train --help)"),
                           (["sample", "--temprature=0.5"], "gpt sample: error: unknown flag --temprature; did "
                                                            "you mean --temperature? (see: gpt sample --help)"),
                           (["train", "--wandb_log"], "gpt train: error: unknown flag --wandb-log "
                                                      "(see: gpt train --help)")]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and capsys.readouterr().err == expected + "\n"


def test_checkpoints_follow_the_umask(tmp_path):
    model = GPT(GPTConfig(vocab_size=3, block_size=4, n_layer=1, n_head=1, n_embd=4))
    optimizer = model.configure_optimizer(0.0, 1e-3, (0.9, 0.99))
    for mask, folder_mode, file_mode in [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)]:
        previous = os.umask(mask)
        try:
            save_checkpoint(str(tmp_path / f"ck{mask:o}"), model, optimizer, CharTokenizer("abc"), {})
        finally:
            os.umask(previous)
        folder = tmp_path / f"ck{mask:o}"
        assert os.stat(folder).st_mode & 0o777 == folder_mode
        for name in ("model.safetensors", "optimizer.safetensors", "state.json"):
            assert os.stat(folder / name).st_mode & 0o777 == file_mode, name


def test_threads_limit_blas_and_are_reported(run, capsys, monkeypatch):
    import gpt.cli
    seen = []
    monkeypatch.setattr(gpt.cli, "cmd_sample", lambda args: seen.append((args.threads, blas_threads())) or 0)
    assert main(["sample", "--out-dir", run, "--threads", "1"]) == 0
    assert main(["sample", "--out-dir", run]) == 0
    assert seen == [(1, 1), (physical_cores(), physical_cores())]
    assert f"threads: {physical_cores()} physical core(s) usable here" in report()
    data = last_state(run)["train_config"]["data"]
    assert main(["train", "--out-dir", str(run) + "2", "--data", data, "--max-iters", "0", "--threads", "1",
                 *TINY]) == 0
    printed = capsys.readouterr()
    assert "device numpy, 1 BLAS threads" in printed.out + printed.err


def test_attention_example_looks_where_the_readme_trains():
    spec = importlib.util.spec_from_file_location("attention_example", os.path.join(REPO, "examples", "attention.py"))
    attention = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(attention)
    with open(os.path.join(REPO, "README.md")) as f:
        trained_into = re.findall(r"python -m gpt train .*?--out-dir (\S+)", f.read())
    assert trained_into and set(trained_into) == set(attention.README_RUNS)
