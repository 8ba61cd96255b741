"""Issue 15's reliability cases, tried as a new user would, through the command lines; prints a markdown
table.

    python benchmarks/reliability_cases.py [--only 1,3,4] [--scratch /tmp/reliability-cases] [--keep]

Each case runs ``python -m cutlight.cli.train`` (tiny settings: ``debug=tiny`` on 32 px built-in data, or on a
generated image folder), ``python -m cutlight.cli.translate`` or ``python -m cutlight.cli.evaluate`` in a subprocess
(one CPU thread, W&B off, the ``cutlight`` of this checkout), looks at what it left behind (exit status, every
checkpoint's values, ``metrics.csv``, image grids, translated images) and prints one row per case:
case | input | exit code | behaviour | message (first line of the error, shortened) | verdict. A verdict other
than ``ok`` says what is wrong; the script exits 1 when any case is wrong.

Groups: 1 non-finite training, 2 kill and resume, 3 bad image files, 4 bad configuration values and
checkpoints, 5 other hostile inputs, 6 issue 28's stops and refusals (two runs in one folder, SIGINT / SIGTERM, a
full disk, runs that train nothing, checks before the first step: issue 27.1 too). All of them take about 10 minutes on 2 CPU cores (group 2 about half of it).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

TINY = ["debug=tiny", "data.size=32", "data.num_train=8", "data.num_test=4",
        "+trainer.enable_progress_bar=false"]
FOLDER = ["debug=tiny", "+trainer.enable_progress_bar=false", "data=folder"]  # + data.root=...
# CPU-deterministic, 2 epochs of 6 batches, last.ckpt after every batch: a kill can land anywhere
RESUME = [*TINY, "+trainer.deterministic=true", "trainer.limit_train_batches=6",
          "callbacks.checkpoint.last_every_n_steps=1", "callbacks.image_grid.every_n_steps=4"]
RESUME_STEPS = 12


# ------------------------------------------------------------------------------------------------ running


@dataclass
class Result:
    rc: int | None
    out: str
    err: str
    secs: float

    @property
    def text(self) -> str:
        return self.out + "\n" + self.err


class Cases:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.rows: list[tuple[str, str, str, str, str, str]] = []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
                    "WANDB_SILENT": "true", "CUTLIGHT_CACHE": str(scratch / "cache"),
                    "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        self.env.pop("HYDRA_FULL_ERROR", None)  # what a user sees

    def cmd(self, module: str, args: list[str]) -> list[str]:
        return [sys.executable, "-m", module, *args]

    def run(self, module: str, args: list[str], timeout: int = 900) -> Result:
        start = time.perf_counter()
        res = subprocess.run(self.cmd(module, args), cwd=self.scratch, env=self.env, capture_output=True,
                             text=True, timeout=timeout)
        return Result(res.returncode, res.stdout, res.stderr, time.perf_counter() - start)

    def train(self, args: list[str], run: Path | None = None, **kw) -> Result:
        return self.run("cutlight.cli.train", [*args, *([f"hydra.run.dir={run}"] if run else [])], **kw)

    def small_checkpoint(self) -> Path:
        """last.ckpt of a 2-batch tiny run (made once)."""
        path = self.scratch / "small-run" / "checkpoints" / "last.ckpt"
        if not path.exists():
            self.train([*TINY, "+trainer.max_steps=4"], self.scratch / "small-run")
        return path

    def popen(self, module: str, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(module, args), cwd=self.scratch, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def row(self, case: str, given: str, res: Result | None, behaviour: str, problems: list[str],
            message: str | None = None) -> None:
        msg = error_message(res) if message is None and res is not None else (message or "")
        verdict = "ok" if not problems else "WRONG: " + "; ".join(problems)
        rc = "-" if res is None else str(res.rc)
        self.rows.append((case, given, rc, behaviour, shorten(msg), verdict))
        print(f"[{case}] rc={rc} {verdict} | {behaviour} | {shorten(msg, 300)}", file=sys.stderr, flush=True)


ERROR_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception)|cutlight[\w.-]*: error|error): ")


def error_message(res: Result) -> str:
    """The user-facing error: the last ``SomeError: ...`` / ``cutlight-translate: error: ...`` line of stderr
    (with the lines that continue it), else the translate report's first failure, else the last stderr lines."""
    lines = res.err.splitlines()
    starts = [i for i, line in enumerate(lines) if ERROR_LINE.match(line)]
    if starts:
        i = starts[-1]
        block = [lines[i]]
        for line in lines[i + 1:]:
            if not line.strip() or line.startswith("Set the environment variable HYDRA_FULL_ERROR"):
                break
            block.append(line)
        return " / ".join(s.strip() for s in block)
    failed = [line.strip() for line in res.out.splitlines() if line.strip().startswith("failed:")]
    if failed:
        return " / ".join(failed)
    tail = [line.strip() for line in lines
            if line.strip() and not line.startswith("Set the environment variable")]
    return " / ".join(tail[-3:]) if tail and res.rc else ""


def frames(res: Result) -> int:
    """Traceback frames printed (a clear error prints at most Hydra's one frame)."""
    return sum(1 for line in res.err.splitlines() if line.startswith('  File "'))


def shorten(text: str, limit: int = 160) -> str:
    text = text.replace("|", "\\|").replace("\n", " / ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------ run folders


def checkpoints(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("*.ckpt")) if (run / "checkpoints").is_dir() else []


def nonfinite_in(path: Path) -> int:
    """Non-finite values in the weights and optimizer states of a checkpoint (not in the callbacks'
    bookkeeping: ModelCheckpoint keeps an infinite ``kth_value`` until it has a score)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt = {k: ckpt.get(k) for k in ("state_dict", "optimizer_states")}
    count = 0

    def visit(x) -> None:
        nonlocal count
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            count += int((~torch.isfinite(x)).sum())
        elif isinstance(x, dict):
            for v in x.values():
                visit(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                visit(v)

    visit(ckpt)
    return count


def csv_rows(run: Path) -> list[dict]:
    path = run / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k == "step" or k.startswith(("train/", "val/"))}
                for r in csv.DictReader(f)]


def train_steps(run: Path) -> list[int]:
    return [int(r["step"]) for r in csv_rows(run) if r.get("train/loss_d")]


def trained_nothing(run: Path) -> list[str]:
    problems = []
    if train_steps(run):
        problems.append(f"trained {len(train_steps(run))} step(s) first")
    if checkpoints(run):
        problems.append(f"wrote {len(checkpoints(run))} checkpoint(s)")
    return problems


def grids(run: Path) -> dict[str, str]:
    folder = run / "images"
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.png"))} \
        if folder.is_dir() else {}


def same_state(a: Path, b: Path) -> str | None:
    """None when two checkpoints hold the same step, weights, optimizer states and schedules; else what
    differs."""
    ca, cb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    if ca["global_step"] != cb["global_step"]:
        return f"global_step {cb['global_step']} != {ca['global_step']}"
    differ = [k for k in ca["state_dict"] if not torch.equal(ca["state_dict"][k], cb["state_dict"][k])]
    if differ:
        worst = max(float((ca["state_dict"][k] - cb["state_dict"][k]).abs().max()) for k in differ)
        return f"{len(differ)} weight tensors differ (max {worst:.3g})"
    for oa, ob in zip(ca["optimizer_states"], cb["optimizer_states"], strict=True):
        for idx, st in oa["state"].items():
            if any(not torch.equal(v, ob["state"][idx][k]) for k, v in st.items()):
                return "optimizer states differ"
    if ca["lr_schedulers"] != cb["lr_schedulers"]:
        return "schedules differ"
    return None


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], poll: float = 0.01) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False when it ended first."""
    try:
        while proc.poll() is None:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                return True
            time.sleep(poll)
    finally:
        proc.wait(timeout=900)
    return False


# ------------------------------------------------------------------------------------------ image files


def save_image(path: Path, size=(40, 40), mode="RGB", seed=0, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16)).save(path, **kw)
    elif mode == "F":  # a plain 0..1 float image is valid input; nan=True puts one NaN in it (refused)
        values = rng.random(size[::-1], dtype=np.float32)
        if kw.pop("nan", False):
            values[0, 0] = np.nan
        Image.fromarray(values).save(path, **kw)
    else:
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert(mode).save(path, **kw)
    return path


def truncated(path: Path, fmt: str) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buf, fmt)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid-looking PNG header declaring side x side RGB pixels, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    data = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (36, 48, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    image.save(path, exif=exif.tobytes())
    return path


def good_folder(root: Path, n: int = 4, size=(40, 40)) -> Path:
    for split in ("trainA", "trainB", "testA", "testB"):
        for i in range(n):
            save_image(root / split / f"{i}.png", size=size, seed=hash((split, i)) % 1000)
    return root


# ------------------------------------------------------------------------------------------------ cases


def case_nonfinite(c: Cases) -> None:
    testa = good_folder(c.scratch / "nf-data") / "testA"
    skip = ["model.nonfinite.policy=skip", "model.nonfinite.max_skips=3",
            "callbacks.checkpoint.last_every_n_steps=1"]
    for name, extra in (("1a", []), ("1b", skip)):
        run = c.scratch / f"lr1e30-{name}"
        res = c.train([*TINY, "model.optimizer.lr=1e30", *extra], run)
        problems, msg = [], error_message(res)
        if res.rc == 0:
            problems.append("exit 0")
        if not re.search(r"loss_\w+=(nan|inf)", msg) or "step" not in msg:
            problems.append("message names no loss term / step")
        cks = checkpoints(run)
        bad = {p.name: nonfinite_in(p) for p in cks}
        if any(bad.values()):
            problems.append(f"non-finite values in {bad}")
        steps = train_steps(run)
        behaviour = (f"{len(steps)} step(s) logged; {len(cks)} checkpoint(s), all finite" if not any(bad.values())
                     else f"checkpoints with non-finite values: {bad}")
        if (run / "checkpoints" / "last.ckpt").exists():
            out = c.scratch / f"lr1e30-{name}-translated"
            tr = c.run("cutlight.cli.translate", ["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--input",
                                              str(testa), "--output", str(out), "--quiet", "--device", "cpu"])
            pics = sorted(out.glob("*.png")) if out.is_dir() else []
            black = sum(1 for p in pics if np.asarray(Image.open(p)).max() == 0)
            behaviour += f"; translate last.ckpt: exit {tr.rc}, {len(pics)} written ({black} black)"
            if tr.rc == 0 and black:
                problems.append("translate wrote black images with exit 0")
            c.row(f"{name}'", f"translate --ckpt <{name} run>/last.ckpt", tr,
                  f"{len(pics)} image(s) written, {black} black", ["black images, exit 0"] if tr.rc == 0 and black
                  else [])
        given = "`model.optimizer.lr=1e30`" + (" " + " ".join(f"`{e}`" for e in extra) if extra else "")
        c.row(name, given, res, behaviour + f"; {res.secs:.0f} s", problems)

    res = c.train([*TINY, "model.optimizer.lr=0"], c.scratch / "lr0")
    c.row("1c", "`model.optimizer.lr=0`", res, "refused before training (a non-positive lr is a config error)",
          [] if res.rc and "model.optimizer.lr" in error_message(res) else ["not refused naming the key"])

    run = c.scratch / "lr-frozen"
    res = c.train([*TINY, "model.optimizer.lr=1e-30", "+trainer.max_steps=600", "trainer.limit_train_batches=8",
                   "model.n_epochs=40", "model.n_epochs_decay=0", "++trainer.check_val_every_n_epoch=1000",
                   "callbacks.image_grid.every_n_steps=1000"], run)
    rows = [r for r in csv_rows(run) if r.get("train/loss_nce")]
    bad = [r["step"] for r in rows
           if not all(np.isfinite(float(v)) for k, v in r.items() if k != "step" and v)]
    problems = [] if res.rc == 0 and len(rows) >= 300 and not bad else [f"exit {res.rc}, {len(rows)} rows, "
                                                                        f"non-finite at steps {bad[:5]}"]
    c.row("1d", "`model.optimizer.lr=1e-30` (weights frozen at init), 300 steps", res,
          f"{len(rows)} steps, losses finite at all of them" if not bad else f"non-finite from step {bad[0]}",
          problems, message="")


def _resume_checks(ref: Path, run: Path, before: dict[str, str], linked: Path | None = None) -> list[str]:
    """``linked``: the run a new folder was resumed from (``ckpt_path=``): the grids drawn before the kill stay
    there, the new folder holds the later ones."""
    problems = []
    last = run / "checkpoints" / "last.ckpt"
    if not last.exists():
        return ["no last.ckpt"]
    differ = same_state(ref / "checkpoints" / "last.ckpt", last)
    if differ:
        problems.append(f"final state differs from the uninterrupted run: {differ}")
    steps = train_steps(run)
    if steps != list(range(1, RESUME_STEPS + 1)):
        problems.append(f"metrics.csv steps {steps}")
    elif csv_rows(run) != csv_rows(ref):
        problems.append("metrics.csv values differ from the uninterrupted run")
    if list(run.rglob("last-v*.ckpt")) or list(run.rglob("*.tmp")):
        problems.append("last-v*.ckpt or .tmp left")
    after = grids(run)
    changed = [k for k, v in before.items() if after.get(k) != v]
    if changed:
        problems.append(f"grids overwritten: {changed}")
    have = set(after) | (set(grids(linked)) if linked else set())
    if not set(grids(ref)) <= have:
        problems.append(f"grids missing: {sorted(set(grids(ref)) - have)}")
    return problems


def case_resume(c: Cases) -> None:
    ref = c.scratch / "resume-ref"
    res = c.train(RESUME, ref)
    if res.rc != 0:
        c.row("2", "uninterrupted reference run", res, "failed", ["the reference run failed"])
        return
    rng = random.Random(os.urandom(8))

    def killed(name: str, at: int | None = None) -> tuple[Path, int, dict]:
        run = c.scratch / name
        at = at or rng.randrange(1, RESUME_STEPS)
        ok = kill_when(c.popen("cutlight.cli.train", [*RESUME, f"hydra.run.dir={run}"]),
                       lambda: max(train_steps(run), default=0) >= at)
        assert ok, f"{name}: the run ended before step {at}"
        return run, at, grids(run)

    variants = [
        ("2a", "SIGKILL after step {k}, then `resume=<run>`", lambda run: [f"resume={run}"]),
        ("2b", "SIGKILL after step {k}, then `hydra.run.dir=<run> ckpt_path=last`",
         lambda run: [f"hydra.run.dir={run}", "ckpt_path=last"]),
    ]
    for name, given, args in variants:
        run, k, before = killed(f"resume-{name}")
        res = c.train([*RESUME, *args(run)])
        problems = ([] if res.rc == 0 else ["resume failed"]) or _resume_checks(ref, run, before)
        c.row(name, given.format(k=k), res, "bit-identical final state, one continuous metrics.csv (steps 1-"
              f"{RESUME_STEPS}), last.ckpt final, no grid overwritten" if not problems else "see verdict", problems)

    # a new folder from a checkpoint file: linked to the old run, its CSV continued
    old, k, _ = killed("resume-2c-old")
    new = c.scratch / "resume-2c-new"
    res = c.train([*RESUME, f"ckpt_path={old / 'checkpoints' / 'last.ckpt'}"], new)
    problems = [] if res.rc == 0 else ["resume failed"]
    if not problems:
        problems = _resume_checks(ref, new, {}, linked=old)
        if not (new / "resumed_from").is_symlink():
            problems.append("no resumed_from link")
    c.row("2c", f"SIGKILL after step {k}, then `ckpt_path=<run>/checkpoints/last.ckpt` (new folder)", res,
          "bit-identical, new folder links resumed_from, metrics.csv continued" if not problems else "see verdict",
          problems)

    # killed twice, resumed twice
    run, k1, before = killed("resume-2d")
    k2 = rng.randrange(k1 + 1, RESUME_STEPS) if k1 + 1 < RESUME_STEPS else None
    if k2:
        ok = kill_when(c.popen("cutlight.cli.train", [*RESUME, f"resume={run}"]),
                       lambda: max(train_steps(run), default=0) >= k2 and len(train_steps(run)) >= k2)
        before = {**before, **grids(run)} if ok else before
    res = c.train([*RESUME, f"resume={run}"])
    problems = ([] if res.rc == 0 else ["resume failed"]) or _resume_checks(ref, run, before)
    c.row("2d", f"SIGKILL after step {k1}, resume, SIGKILL after step {k2}, resume again", res,
          "bit-identical, one continuous metrics.csv" if not problems else "see verdict", problems)

    # a kill while a checkpoint is being written (its .tmp exists)
    run = c.scratch / "resume-2e"
    tmp_seen: list[str] = []

    def saving() -> bool:
        found = list((run / "checkpoints").glob("*.tmp")) if (run / "checkpoints").is_dir() else []
        if found and max(train_steps(run), default=0) >= 3:
            tmp_seen.extend(p.name for p in found)
            return True
        return False

    kill_when(c.popen("cutlight.cli.train", [*RESUME, f"hydra.run.dir={run}"]), saving, poll=0.0005)
    intact = None
    if (run / "checkpoints" / "last.ckpt").exists():
        try:
            last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
            intact = last["global_step"]
        except Exception as err:  # noqa: BLE001
            intact = f"unreadable ({type(err).__name__})"
    before = grids(run)
    res = c.train([*RESUME, f"resume={run}"])
    problems = [] if tmp_seen else ["the kill did not land during a save (rerun)"]
    if not isinstance(intact, int):
        problems.append(f"last.ckpt after the kill: {intact}")
    problems += ([] if res.rc == 0 else ["resume failed"]) or _resume_checks(ref, run, before)
    c.row("2e", f"SIGKILL while writing {', '.join(tmp_seen) or '?'}, then `resume=<run>`", res,
          f"last.ckpt intact after the kill (step {intact}); resume bit-identical, .tmp removed"
          if not problems else "see verdict", problems)

    # a finished run resumed again: nothing to train, nothing rewritten
    csv_before, last_before = csv_rows(ref), (ref / "checkpoints" / "last.ckpt").read_bytes()
    res = c.train([*RESUME, f"resume={ref}"])
    problems = []
    if csv_rows(ref) != csv_before:
        problems.append("metrics.csv changed")
    if (ref / "checkpoints" / "last.ckpt").read_bytes() != last_before and \
            same_state(c.scratch / "resume-2a" / "checkpoints" / "last.ckpt", ref / "checkpoints" / "last.ckpt"):
        problems.append("last.ckpt changed")
    c.row("2f", "`resume=<finished run>`", res, "nothing trained, metrics.csv and last.ckpt unchanged"
          if not problems else "see verdict", problems + ([] if res.rc == 0 else [f"exit {res.rc}"]))


def hostile_folder(root: Path) -> dict[str, bool]:
    """trainA with every kind of hostile file; name -> whether it must be refused."""
    good_folder(root)
    a = root / "trainA"
    files = {
        "trainA/trunc.png": truncated(a / "trunc.png", "PNG"),
        "trainA/trunc.jpg": truncated(a / "trunc.jpg", "JPEG"),
        "trainA/zero.png": a / "zero.png",
        "trainA/text.jpg": a / "text.jpg",
        "trainA/bomb.png": bomb_png(a / "bomb.png"),
        "trainA/float.tif": save_image(a / "float.tif", mode="F", nan=True),
        "trainA/float_ok.tif": save_image(a / "float_ok.tif", mode="F"),
        "trainA/gray16.png": save_image(a / "gray16.png", mode="I;16"),
        "trainA/cmyk.jpg": save_image(a / "cmyk.jpg", mode="CMYK"),
        "trainA/palette.png": save_image(a / "palette.png", mode="P"),
        "trainA/exif.jpg": exif_rotated_jpeg(a / "exif.jpg"),
        "testB/cut.png": truncated(root / "testB" / "cut.png", "PNG"),
    }
    files["trainA/zero.png"].write_bytes(b"")
    files["trainA/text.jpg"].write_text("this is not an image\n")
    (a / "sub").mkdir()
    save_image(a / "sub" / "deep.png")
    os.symlink("..", a / "sub" / "loop")  # trainA/sub/loop -> trainA: a loop
    os.symlink(".", a / "self")  # a link to its own folder
    os.symlink("selflink.png", a / "selflink.png")  # a file link to itself
    must_fail = {"trainA/trunc.png", "trainA/trunc.jpg", "trainA/zero.png", "trainA/text.jpg", "trainA/bomb.png",
                 "trainA/float.tif", "testB/cut.png", "trainA/selflink.png"}
    return {name: name in must_fail for name in [*files, "trainA/selflink.png"]}


def case_files(c: Cases) -> None:
    root = c.scratch / "hostile"
    expect = hostile_folder(root)
    run = c.scratch / "hostile-run"
    res = c.train([*FOLDER, f"data.root={root}", "data.max_dataset_size=null", "data.max_val_images=null"],
                  run)
    msg = error_message(res)
    listed = [line.split(":")[0].strip() for line in res.err.splitlines() if re.match(r"^\s+/.*: ", line)]
    names = [str(Path(p).relative_to(root)) if p.startswith(str(root)) else p for p in listed]
    problems = [] if res.rc else ["exit 0"]
    missing = [n for n, bad in expect.items() if bad and n not in names]
    wrong = [n for n, bad in expect.items() if not bad and n in names]
    dups = sorted({n for n in names if names.count(n) > 1})
    problems += [f"not listed: {missing}"] * bool(missing) + [f"valid files refused: {wrong}"] * bool(wrong)
    problems += [f"listed twice: {dups}"] * bool(dups) + trained_nothing(run)
    reasons = {n: line.split(": ", 1)[1] for n, line in zip(names, [ln.strip() for ln in res.err.splitlines()
                                                                        if re.match(r"^\s+/.*: ", ln)])}
    c.row("3a", "data=folder with trunc PNG/JPEG, zero-byte, text .jpg, 20000x20000 PNG header, float TIFF with "
          "a NaN (and a valid 0..1 one), "
          "file self-link, dir loop + self-link, 16-bit, CMYK, palette, EXIF JPEGs, truncated testB", res,
          f"fails in setup before any step; lists {len(names)} files once each: "
          + "; ".join(f"{n}: {r[:40]}" for n, r in reasons.items()), problems, message=msg.split(" / ")[0])

    from cutlight.data.folder import list_images

    start = time.perf_counter()
    found = list_images(root / "trainA")
    secs = time.perf_counter() - start
    rel = [str(p.relative_to(root / "trainA")) for p in found]
    problems = [f"{secs:.2f} s"] * (secs > 1)
    problems += [f"duplicates: {len(rel) - len(set(rel))}"] * (len(rel) != len(set(rel)))
    c.row("3b", "list_images(trainA) with trainA/sub/loop -> .., trainA/self -> .", None,
          f"{len(found)} files in {secs * 1000:.0f} ms, no duplicates" if not problems else "see verdict", problems,
          message="")

    # decoding errors past the header check: verify=none, a bomb and a truncated file reach the loader
    for name, bad in (("3c", "bomb.png"), ("3d", "trunc.jpg")):
        data = good_folder(c.scratch / f"decode-{name}")
        shutil.copy(root / "trainA" / bad, data / "trainA" / bad)
        run = c.scratch / f"decode-{name}-run"
        res = c.train([*FOLDER, f"data.root={data}", "data.verify=none"], run)
        msg = error_message(res)
        problems = [] if res.rc and bad in msg else ["the error does not name the file"]
        problems += [f"{frames(res)} traceback frames"] * (frames(res) > 1)
        c.row(name, f"`data.verify=none`, trainA/{bad} (found only when loaded)", res,
              f"fails at step {max(train_steps(run), default=0) + 1}; traceback frames: {frames(res)}", problems)

    bomb, tiny = root / "trainA" / "bomb.png", save_image(c.scratch / "tiny" / "3x2.png", size=(3, 2))
    ckpt = c.small_checkpoint()
    for name, args, want in (
        ("3e", ["cutlight.cli.translate", "--ckpt", str(ckpt), "--input", str(bomb), "--output",
                str(c.scratch / "tr-bomb"), "--quiet", "--device", "cpu"], "bomb.png"),
        ("3f", ["cutlight.cli.evaluate", "--real", str(root / "trainA"), "--fake", str(root / "trainB"),
                "--device", "cpu"], "bomb.png"),
        ("3g", ["cutlight.cli.translate", "--ckpt", str(ckpt), "--input", str(tiny), "--output",
                str(c.scratch / "tr-tiny"), "--quiet", "--device", "cpu"], "3x2"),
    ):
        res = c.run(args[0], args[1:])
        msg = error_message(res)
        problems = [] if res.rc and want in msg else [f"rc {res.rc}, message does not name {want}"]
        problems += [f"{frames(res)} traceback frames"] * (frames(res) > 0)
        label = {"3e": "translate --input bomb.png", "3f": "evaluate --real <trainA with the bad files>",
                 "3g": "translate --input 3x2.png"}[name]
        c.row(name, label, res, f"exit {res.rc}", problems)


BAD_VALUES = [
    ("data.crop_size=63", "data.crop_size"),
    ("model.optimizer.lr=abc", "model.optimizer.lr"),
    ("model.optimizer.lr=-1", "model.optimizer.lr"),
    ("model.objective.num_patches=abc", "model.objective.num_patches"),
    ("model.objective.num_patches=0", "model.objective.num_patches"),
    ("data.preprocess=resize_and_crop data.load_size=16", "data.load_size"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.verify=yes", "data.verify"),
    ("data.max_image_pixels=abc", "data.max_image_pixels"),
    ("model.nonfinite.policy=ignore", "model.nonfinite.policy"),
    ("model.nonfinite.max_skips=0", "model.nonfinite.max_skips"),
    ("model.objective.nce_temperature=0", "model.objective.nce_temperature"),
    ("model.optimizer.betas=[2,3]", "model.optimizer.betas"),
    ("model.generator.ngf=abc", "model.generator.ngf"),
    ("model.n_epochs=-1", "model.n_epochs"),
]


def case_config(c: Cases) -> None:
    for i, (override, key) in enumerate(BAD_VALUES):
        run = c.scratch / f"bad-{i}"
        res = c.train([*TINY, *override.split()], run)
        msg = error_message(res)
        problems = [] if res.rc else ["exit 0"]
        problems += [f"message does not name {key}"] * (key not in msg) + trained_nothing(run)
        problems += [f"{frames(res)} traceback frames"] * (frames(res) > 1)
        c.row(f"4{chr(97 + i)}", f"`{override}`", res, "refused before training" if not trained_nothing(run)
              else "trained first", problems)

    # checkpoints that cannot be used: given to the trainer and to cutlight.cli.translate
    ref = c.small_checkpoint()
    other = c.scratch / "other-arch"
    c.train([*TINY, "model.generator.ngf=4", "+trainer.max_steps=1", "model.val_metrics=false"], other)
    folder = c.scratch / "bad-ckpts"
    folder.mkdir(exist_ok=True)
    data = ref.read_bytes()
    full = torch.load(ref, map_location="cpu", weights_only=True)
    nan = {**full, "state_dict": {k: (v.clone().fill_(float("nan")) if k.startswith("generator.") and
                                      v.is_floating_point() else v) for k, v in full["state_dict"].items()}}
    made = {
        "empty.ckpt": lambda p: p.write_bytes(b""),
        "garbage.ckpt": lambda p: p.write_bytes(os.urandom(4096)),
        "truncated.ckpt": lambda p: p.write_bytes(data[: len(data) // 2]),
        "weights_only.ckpt": lambda p: torch.save({"state_dict": full["state_dict"]}, p),
        "nan.ckpt": lambda p: torch.save(nan, p),
        "other_arch.ckpt": lambda p: shutil.copy(other / "checkpoints" / "last.ckpt", p),
        "a_folder.ckpt": lambda p: p.mkdir(exist_ok=True),
    }
    for j, (name, make) in enumerate(made.items()):
        path = folder / name
        make(path)
        run = c.scratch / f"ckpt-run-{j}"
        res = c.train([*TINY, f"ckpt_path={path}"], run)
        msg = error_message(res)
        problems = [] if res.rc else ["exit 0"]
        problems += ["message does not name the file"] * (name not in msg) + trained_nothing(run)
        problems += [f"{frames(res)} traceback frames"] * (frames(res) > 1)
        c.row(f"4{chr(ord('p') + j)}", f"`ckpt_path=`{name}", res, "refused before training", problems)
        inputs = good_folder(c.scratch / "good") / "testA"
        tr = c.run("cutlight.cli.translate", ["--ckpt", str(path), "--input", str(inputs),
                                         "--output", str(c.scratch / f"tr-{name}"), "--quiet", "--device", "cpu"])
        usable = name == "other_arch.ckpt"  # its generator is rebuilt from the checkpoint's own settings
        problems = [] if (tr.rc == 0) == usable else [f"exit {tr.rc}"]
        if not usable:
            problems += ["message does not name the file"] * (name not in error_message(tr))
        problems += [f"{frames(tr)} traceback frames"] * (frames(tr) > 0)
        c.row(f"4{chr(ord('p') + j)}'", f"translate --ckpt {name}", tr,
              "translated (the checkpoint says how to build its generator)" if usable and tr.rc == 0 else
              f"exit {tr.rc}", problems)


def case_other(c: Cases) -> None:
    fresh = c.scratch / "fresh-last"
    res = c.train([*TINY, "ckpt_path=last", "+trainer.max_steps=4"], fresh)  # max_steps: both optimizers' steps
    steps = train_steps(fresh)
    problems = [] if res.rc == 0 and steps == [1, 2] else [f"exit {res.rc}, steps {steps}"]
    c.row("5a", "`ckpt_path=last` in a fresh folder", res, "starts from scratch (logged), trains 2 steps", problems,
          message=next((ln for ln in (fresh / "train.log").read_text().splitlines() if "ckpt_path=last" in ln), "")
          if (fresh / "train.log").exists() else "")
    cases = [
        ("5b", "`resume=<a folder that does not exist>`", [f"resume={c.scratch / 'no-such-run'}"], "resume"),
        ("5c", "`resume=<run folder without checkpoints>`", [f"resume={c.scratch / 'bad-0'}"], "resume"),
        ("5d", "`ckpt_path=/nonexistent.ckpt`", ["ckpt_path=/nonexistent.ckpt"], "nonexistent.ckpt"),
        ("5e", "`ckpt_path=<run>/last.ckpt` with another architecture (`model.generator.ngf=16`)",
         [f"ckpt_path={c.small_checkpoint()}", "model.generator.ngf=16"],
         "generator."),
        ("5f", "`data=folder data.root=/nonexistent`", ["data.root=/nonexistent"], "/nonexistent"),
        ("5g", "`data=folder` without `data.root`", [], "data.root"),
    ]
    (c.scratch / "bad-0").mkdir(exist_ok=True)
    for name, given, args, want in cases:
        run = c.scratch / f"other-{name}"
        base = FOLDER if name in ("5f", "5g") else TINY
        res = c.train([*base, *args], run if not any(a.startswith("resume=") for a in args) else None)
        msg = error_message(res)
        problems = [] if res.rc else ["exit 0"]
        problems += [f"message does not name {want}"] * (want not in msg)
        problems += [f"{frames(res)} traceback frames"] * (frames(res) > 1)
        c.row(name, given, res, "refused before training", problems)

    empty = c.scratch / "empty-dir"
    empty.mkdir(exist_ok=True)
    (empty / "notes.txt").write_text("no images")
    ckpt = c.small_checkpoint()
    good_folder(c.scratch / "good")
    one = save_image(c.scratch / "one-image" / "x.png")
    for name, given, args, want in (
        ("5h", "translate --input <folder without images>", ["cutlight.cli.translate", "--ckpt", str(ckpt), "--input",
                                                               str(empty), "--output", str(c.scratch / "tr-e")],
         "empty-dir"),
        ("5i", "evaluate --fake <folder without images>", ["cutlight.cli.evaluate", "--real", str(c.scratch / "good"
                                                                                             / "testA"),
                                                             "--fake", str(empty), "--device", "cpu"], "empty-dir"),
        ("5j", "evaluate --fake <one image>", ["cutlight.cli.evaluate", "--real", str(c.scratch / "good" / "testA"),
                                               "--fake", str(one.parent), "--device", "cpu"], "2 images"),
    ):
        res = c.run(args[0], [*args[1:], "--quiet"] if "translate" in args[0] else args[1:])
        msg = error_message(res)
        problems = [] if res.rc else ["exit 0"]
        problems += [f"message does not name {want}"] * (want not in msg)
        problems += [f"{frames(res)} traceback frames"] * (frames(res) > 0)
        c.row(name, given, res, f"exit {res.rc}", problems)


# ------------------------------------------------------------------------- issue 28 (2, 4-7) and 27.1


def _popen_run(c: Cases, args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(c.cmd("cutlight.cli.train", args), cwd=c.scratch, env=c.env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)


def _wait_steps(proc: subprocess.Popen, run: Path, n: int, timeout: float = 300) -> bool:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if len(train_steps(run)) >= n:
            return True
        time.sleep(0.05)
    return False


def _summary_state(run: Path) -> str | None:
    import json

    try:
        return json.loads((run / "summary.json").read_text()).get("state")
    except (OSError, ValueError):
        return None


def case_stops(c: Cases) -> None:
    """6: two runs in one folder, SIGINT / SIGTERM, a full disk, runs that train nothing."""
    long = [*TINY, "trainer.limit_train_batches=8"]
    # 6a / 6b: a second run, and a resume, into a live run's folder
    run = c.scratch / "lock-run"
    first = _popen_run(c, [*long, "model.n_epochs=500", "model.n_epochs_decay=0", f"hydra.run.dir={run}"],
                       c.scratch / "lock-run.log")
    try:
        _wait_steps(first, run, 2)
        for name, given, args in (("6a", "a second run with the same `hydra.run.dir` while the first trains",
                                   [*long, "seed=1", f"hydra.run.dir={run}"]),
                                  ("6b", "`resume=<the live run>`", [*long, f"resume={run}"])):
            res = c.train(args)
            alive = first.poll() is None
            problems = [f"exit {res.rc}"] * (res.rc != 1) + ["owner pid not named"] * (f"pid {first.pid}" not in
                                                                                       error_message(res))
            problems += ["the first run died"] * (not alive)
            c.row(name, given, res, "refused before writing anything; the first run keeps training"
                  if not problems else "see verdict", problems)
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=300)
    steps = train_steps(run)
    c.row("6c", "the first run of 6a/6b, then Ctrl-C", Result(first.returncode, "", "", 0),
          f"exit {first.returncode}, metrics.csv steps 1-{len(steps)} continuous, summary '{_summary_state(run)}'",
          [] if first.returncode == 130 and steps == list(range(1, len(steps) + 1)) and not (run / "run.lock").exists()
          else ["mixed rows, lock left or wrong exit"], message="")
    # 6d: a stale lock (dead pid)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = c.scratch / "stale-lock"
    run.mkdir(exist_ok=True)
    import json
    import socket

    (run / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "earlier"}))
    res = c.train([*TINY, "+trainer.max_steps=2"], run)
    warned = "taking over the stale lock" in res.text
    c.row("6d", "`run.lock` of a dead process in the run folder", res, "taken over with a warning, trains",
          [] if res.rc == 0 and warned else [f"exit {res.rc}, warned {warned}"],
          message=next((ln.split(" - ", 1)[-1] for ln in res.text.splitlines() if "stale lock" in ln), ""))
    # 6e / 6f: SIGINT and SIGTERM after a few steps, then resume
    for name, sig in (("6e", signal.SIGINT), ("6f", signal.SIGTERM)):
        run = c.scratch / f"signal-{name}"
        proc = _popen_run(c, [*long, f"hydra.run.dir={run}"], c.scratch / f"signal-{name}.log")
        _wait_steps(proc, run, 3)
        proc.send_signal(sig)
        proc.wait(timeout=300)
        text = (c.scratch / f"signal-{name}.log").read_text()
        done = len(train_steps(run))
        try:
            step = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
        except Exception:  # noqa: BLE001
            step = None
        state = _summary_state(run)
        res = c.train([*long, f"resume={run}"])
        problems = [f"exit {proc.returncode}"] * (proc.returncode != 128 + sig)
        problems += [f"last.ckpt at optimizer step {step}, {done} batches logged"] * (step != 2 * done)
        problems += [f"summary.json '{state}'"] * (state != "interrupted")
        problems += ["no summary printed"] * ("cutlight run interrupted" not in text)
        problems += [f"resume exit {res.rc}"] * (res.rc != 0)
        problems += [f"steps after resume {train_steps(run)}"] * (train_steps(run) != list(range(1, 17)))
        line = next((ln for ln in text.splitlines() if ln.startswith("interrupted by")), "")
        c.row(name, f"{sig.name} after step {done}, then `resume=<run>`", Result(proc.returncode, "", "", 0),
              f"last.ckpt at step {done}, summary printed, summary.json '{state}'; resume: steps 1-16 continuous"
              if not problems else "see verdict", problems, message=line)
    # 6g: a full disk at the second save (torch's write patched to raise ENOSPC), then resume
    hook = c.scratch / "enospc-hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(
        "import errno, os\nimport lightning_fabric.plugins.io.torch_io as t\n_real, _n = t._atomic_save, [0]\n"
        "def _save(ckpt, path):\n    _n[0] += 1\n    if _n[0] >= 2:\n        open(path, 'wb').write(b'PK' * 500)\n"
        "        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))\n    _real(ckpt, path)\n"
        "t._atomic_save = _save\n")
    run = c.scratch / "disk-full"
    args = [*long, "callbacks.checkpoint.last_every_n_steps=2"]
    env = c.env
    c.env = {**env, "PYTHONPATH": os.pathsep.join([str(hook), env["PYTHONPATH"]])}
    try:
        full = c.train(args, run)
    finally:
        c.env = env
    tmps = [p.name for p in run.rglob("*.tmp")]
    try:
        step = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    except Exception:  # noqa: BLE001
        step = None
    state = _summary_state(run)
    problems = [f"exit {full.rc}"] * (full.rc == 0) + [f".tmp left: {tmps}"] * bool(tmps)
    problems += [f"last.ckpt step {step}"] * (step != 4) + [f"summary.json '{state}'"] * (state != "failed")
    c.row("6g", "disk full (ENOSPC) at the 2nd checkpoint save", full,
          f"stops; .tmp removed, last.ckpt of the 1st save intact (step {step // 2 if step else '?'}), "
          f"summary.json '{state}'" if not problems else "see verdict", problems)
    res = c.train([*args, f"resume={run}"])
    c.row("6h", "space freed, then `resume=<run>` (no hand cleaning)", res,
          f"resumes, steps 1-{len(train_steps(run))} continuous, summary.json '{_summary_state(run)}'",
          [] if res.rc == 0 and train_steps(run) == list(range(1, 17)) else [f"exit {res.rc}"], message="")
    run = c.scratch / "only-tmp"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / "last.ckpt.tmp").write_bytes(b"x" * 2048)
    res = c.train([*TINY, f"resume={run}"])
    problems = [] if res.rc == 1 and "only last.ckpt.tmp" in error_message(res) else ["does not say what it found"]
    c.row("6i", "`resume=<run>` with only `last.ckpt.tmp` (killed during its first save)", res,
          "refused, saying what it found (and removing it)", problems)
    # 6j: every iteration skipped
    run = c.scratch / "all-skipped"
    res = c.train([*TINY, "model.optimizer.lr=1e30", "model.nonfinite.policy=skip", "model.nonfinite.max_skips=100"],
                  run)
    c.row("6j", "`model.optimizer.lr=1e30 model.nonfinite.policy=skip model.nonfinite.max_skips=100` (every "
          "iteration skipped)", res, f"exit {res.rc}, summary.json '{_summary_state(run)}'",
          [] if res.rc == 1 and "no optimizer update" in error_message(res) else [f"exit {res.rc}"])
    # 6k-6q: refused before the first step, naming the key or the folder
    one = good_folder(c.scratch / "one-val", n=1)
    for i, (given, args, want) in enumerate([
        ("`trainer.max_epochs=0`", [*TINY, "trainer.max_epochs=0"], "trainer.max_epochs"),
        ("`seed=abc`", [*TINY, "seed=abc"], "seed='abc'"),
        ("`trainer.devices=3` (CPU, default strategy)", [*TINY, "trainer.devices=3"], "trainer=ddp_cpu"),
        ("`data.input_nc=1` with CUT", [*TINY, "data.input_nc=1"], "data.input_nc"),
        ("`data=folder`, 1 validation image per side (FID/KID on)", [*FOLDER, f"data.root={one}"], str(one / "testA")),
        ("`data.max_val_images=1` (FID/KID on)", [*TINY, "data.max_val_images=1"], "data.max_val_images"),
    ]):
        run = c.scratch / f"early-{i}"
        res = c.train(args, run)
        problems = [f"exit {res.rc}"] * (res.rc != 1) + [f"message does not name {want}"] * (want not in
                                                                                                error_message(res))
        problems += trained_nothing(run) + [f"{frames(res)} traceback frames"] * (frames(res) > 1)
        c.row(f"6{chr(ord('k') + i)}", given, res, "refused before the first step", problems)
    run = c.scratch / "sincut-tiny"
    res = c.train(["experiment=sincut_cpu", "debug=tiny", "+trainer.enable_progress_bar=false"], run)
    c.row("6q", "`experiment=sincut_cpu debug=tiny`", res, f"exit {res.rc}: trains and validates (FID/KID off for "
          "one image)", [] if res.rc == 0 and train_steps(run) else [f"exit {res.rc}"])


GROUPS = {"1": case_nonfinite, "2": case_resume, "3": case_files, "4": case_config, "5": case_other,
          "6": case_stops}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="1,2,3,4,5,6", help="groups to run, e.g. 1,3")
    p.add_argument("--scratch", default="/tmp/reliability-cases", help="working folder (emptied first)")
    p.add_argument("--keep", action="store_true", help="do not empty the working folder first")
    args = p.parse_args()
    scratch = Path(args.scratch)
    if scratch.exists() and not args.keep:
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    cases = Cases(scratch)
    for group in args.only.split(","):
        GROUPS[group.strip()](cases)
    print("| case | input | exit code | behaviour | message (first line) | verdict |")
    print("|---|---|---|---|---|---|")
    for row in cases.rows:
        print("| " + " | ".join(row) + " |")
    return int(any(row[-1] != "ok" for row in cases.rows))


if __name__ == "__main__":
    sys.exit(main())
