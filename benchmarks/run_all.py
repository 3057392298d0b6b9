"""Run every benchmark, one after the other, and write ``benchmarks/RESULTS.md``: the machine,
the versions, the date and commit, then each benchmark's command, its printed ratios and how
long it ran. ``make bench`` runs it; the README's figures come from the file it writes.

Benchmarks run alone (never two at once: on a 2-core machine PyTorch jobs slow each other down
many times over). A benchmark that fails is recorded as failed with the end of its output, and
the others still run; the exit status is then 1.

    python benchmarks/run_all.py [--only explain_cost tea_speed ...] [--out FILE.md] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Benchmark:
    name: str
    what: str
    args: tuple[str, ...] = ()


#: every benchmark with the arguments ``make bench`` runs it with (their defaults unless noted)
BENCHMARKS = (
    Benchmark("explain_cost", "LRP-ε / input gradient, TEA step / ERM step, peak memory (64 and 224 px)"),
    Benchmark("tea_speed", "bfloat16 autocast, channels_last, torch.compile: heatmap error and speed-up"),
    Benchmark("distributed", "2 torchrun processes / 1 process: TEA training throughput on the CPU"),
    Benchmark("student_vs_teacher", "student / teacher inference throughput and parameters"),
    Benchmark("ingest", "DICOM ingestion rate against training consumption"),
    Benchmark("infer", "tea-med infer per backend against the bare forward; DICOM results' cost"),
    Benchmark("node", "the DICOM node against tea-med infer: latency and throughput"),
    Benchmark("audit", "tea-med audit against tea-med infer on the same images"),
)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine() -> str:
    return f"{_cpu()}, {os.cpu_count()} logical CPUs"


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True
        )
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def header(threads: int) -> list[str]:
    packages = ", ".join(
        f"{p} {_version(p)}" for p in ("torch", "monai", "onnxruntime", "pydicom", "pynetdicom")
    )
    return [
        "# tea_med benchmarks",
        "",
        "Written by `make bench` (`python benchmarks/run_all.py`); every figure is a ratio or rate",
        "measured in one run of the shipped code path. Rerun it to refresh this file.",
        "",
        f"- written: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} at commit {_commit()} "
        "(each section says when, at which commit and on which CPU it ran)",
        f"- machine of this write: {_machine()}, {_memory_gib()} memory, no GPU used",
        f"- threads per benchmark: {threads} (`OMP_NUM_THREADS`)",
        f"- Python {platform.python_version()}, {packages}",
        "",
    ]


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - ")


def printed_results(output: str) -> str:
    """A benchmark's printed figures without the log records of the libraries it calls (MONAI's
    bundle scripts log their inputs to stdout), nor those records' continuation lines."""
    kept: list[str] = []
    in_record = False
    for line in output.splitlines():
        if _LOG_LINE.match(line):
            in_record = True
        elif in_record and (not line.strip() or line.startswith(" ")):
            pass
        else:
            in_record = False
            kept.append(line)
    return "\n".join(kept).strip()


def run(bench: Benchmark, threads: int) -> tuple[bool, str, float]:
    cmd = [sys.executable, str(HERE / f"{bench.name}.py"), *bench.args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        return False, (proc.stdout + proc.stderr)[-3000:], took
    return True, printed_results(proc.stdout), took


def previous_sections(path: Path) -> dict[str, str]:
    """The benchmark sections (``## name: ...`` up to the next one) of an earlier RESULTS.md."""
    if not path.is_file():
        return {}
    sections: dict[str, str] = {}
    for part in re.split(r"^(?=## )", path.read_text(), flags=re.M)[1:]:
        sections[part.split(":", 1)[0][3:].strip()] = part.rstrip() + "\n"
    return sections


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [b.name for b in BENCHMARKS]
    ap.add_argument(
        "--only",
        nargs="+",
        choices=names,
        metavar="NAME",
        help=f"rerun these only (the others' sections are kept from --out): {', '.join(names)}",
    )
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    sections = previous_sections(args.out) if args.only else {}
    failed = []
    for i, bench in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {bench.name}: {bench.what} ...", flush=True)
        ok, output, took = run(bench, args.threads)
        print(f"[{i}/{len(chosen)}] {bench.name}: {'done' if ok else 'FAILED'} in {took:.0f} s", flush=True)
        command = " ".join(["python", f"benchmarks/{bench.name}.py", *bench.args])
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [
            f"## {bench.name}: {bench.what}",
            "",
            f"`{command}` ({took:.0f} s; {when}, commit {_commit()}; {_machine()})",
            "",
        ]
        if ok:
            lines += ["```", output, "```", ""]
        else:
            failed.append(bench.name)
            lines += ["**failed**; the end of its output:", "", "```", output, "```", ""]
        sections[bench.name] = "\n".join(lines)
        body = [sections[b.name] for b in BENCHMARKS if b.name in sections]
        # written after every benchmark: nothing is lost when a later one fails
        args.out.write_text("\n".join(header(args.threads)) + "\n" + "\n".join(body))
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
