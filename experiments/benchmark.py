"""Speed and memory benchmark: simulated requests per wall-clock second, medians.

    python experiments/benchmark.py            # both workloads, 3 timed runs each
    python experiments/benchmark.py --repeats 5
    python experiments/benchmark.py --process  # `simcost run` and `simcost --help` as whole processes
    python experiments/benchmark.py --peer --peer-python /tmp/dynamo-venv/bin/python  # vs Dynamo's replay
    python experiments/benchmark.py --peer --peer-python /tmp/dynamo-venv/bin/python --workloads mooncake
    python experiments/benchmark.py --peer --peer-python /tmp/dynamo-venv/bin/python --baseline ../main  # + another tree
    python experiments/benchmark.py --loop --baseline ../main --workloads 100k --loop-set duration_s=200
    python experiments/benchmark.py --instructions --baseline ../main --workloads mooncake --loop-set duration_s=600
    python experiments/benchmark.py --memory   # peak RSS and wall time of `simcost run` at 100k and 1M requests
    python experiments/benchmark.py --memory --sizes 100000 --repeats 3 --request-records none

Workloads:
- poisson: Llama-3.1-8B on one H100, ~10,000 Poisson requests, 2,048 prompt / 256 output tokens
  at 8 req/s (configs/scenarios/poisson_8b_h100.yaml);
- azure-conv: the whole Azure 2023 conversation trace (19,366 requests) on 4 replicas of
  Llama-2-70B over 4 x A100 (configs/scenarios/azure_conv_70b_a100.yaml).
Each workload runs in its own child process (so its peak RSS is its own): one untimed run to
load numba's compiled kernels, then the timed runs. The same child also times a short slice
with decode spans on and off (one SimPy event per decode step), and reports the ratio, so the
speed-up of spans is measured against a baseline on the same machine in the same command.

--process times what a user waits for: `simcost run` on the Poisson workload as a subprocess
(imports, numba cache loads, simulation, results folder) and `simcost --help`; wall time and peak
RSS, medians after one untimed run. --peer runs NVIDIA Dynamo's replay (`python -m dynamo.replay`,
from `pip install ai-dynamo==1.4.2`) and `simcost run` on three workloads (PEER_WORKLOADS: the
Poisson run; the Mooncake conversation trace on 8 replicas; 100k Poisson requests on 16 replicas),
alternately so both see the same machine load, and prints both sides, the ratio and peak RSS. This
script installs nothing: without dynamo.replay importable by --peer-python it says so and times
simcost alone.

--loop times the simulation alone (`Simulation.run`: the event loop, the bill and the summary) on
--peer's workloads, in this tree and, with --baseline, another one, a fresh process per run and
the trees taking turns: what an engine change is worth without the imports, files and figures
around it, in wall and CPU seconds (each run's second `Simulation.run`, after one that loads
numba's kernels). --loop-set adds scenario overrides (a 100k-shaped slice: duration_s=200).
--instructions counts what one `Simulation.run` executes instead (valgrind's callgrind; ~50x
slower than a plain run, so take a slice with --loop-set): steady to ~0.1 % on a VM whose speed
moves ~25 % within minutes, but blind to cache misses.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {
    "poisson": ROOT / "configs" / "scenarios" / "poisson_8b_h100.yaml",
    "azure-conv": ROOT / "configs" / "scenarios" / "azure_conv_70b_a100.yaml",
}
# Dynamo's replay of the Poisson workload: 10,000 requests, 2,048 in / 256 out at 8 req/s, one worker
PEER_ARGS = ["--input-tokens", "2048", "--output-tokens", "256", "--request-count", "10000", "--request-rate", "8",
             "--arrival-seed", "42", "--num-workers", "1", "--replay-mode", "offline",
             "--extra-engine-args", '{"block_size":64}']
MOONCAKE = ROOT / "simcost" / "data" / "traces" / "mooncake_fast25_conversation_trace.jsonl"
# The replay's engine defaults match simcost's vllm-v1 preset (chunked prefill, 8,192-token budget,
# 256 sequences, prefix caching) except KV capacity: its default 16,384 blocks of 512 tokens are
# 8.4M tokens per worker, 18x simcost's 28,821 16-token blocks (461k tokens) for Llama-3.1-8B on an
# H100, so it would evict almost nothing and reuse 14% of prompt tokens to simcost's 6%. 900 blocks
# of 512 (460,800 tokens) give both the same KV memory and the same reuse (6%).
MOONCAKE_REPLAY_ENGINE = '{"block_size":512,"num_gpu_blocks":900}'
# --peer's workloads (issue 20): simcost run's scenario and --set overrides, and the replay's arguments.
# Mooncake: the whole conversation trace (12,031 requests, 3,537 s) on 8 replicas, round robin; the
# replay caches 512-token blocks (the trace's hash blocks); simcost hashes the trace's 512-token
# blocks too but keeps vLLM's 16-token KV blocks (vLLM accepts no 512, so simcost refuses it).
PEER_WORKLOADS = {
    "poisson 10k, 1 replica": (WORKLOADS["poisson"], [], PEER_ARGS),
    "mooncake conv, 8 replicas": (
        ROOT / "configs" / "scenarios" / "mooncake_conv_8b_h100.yaml",
        # the replay's 256 sequences: vllm-v1's default on an H100 is 1024 (vLLM's since v0.10)
        ["duration_s=3600", "fleet.replicas=8", "fleet.router=round_robin", "engine.max_num_seqs=256"],
        [str(MOONCAKE), "--trace-format", "mooncake", "--num-workers", "8", "--router-mode", "round_robin",
         "--trace-block-size", "512", "--replay-mode", "offline", "--extra-engine-args", MOONCAKE_REPLAY_ENGINE]),
    "poisson 100k, 16 replicas": (
        WORKLOADS["poisson"], ["workload.arrivals.rate_per_s=100", "duration_s=1000", "fleet.replicas=16"],
        [*PEER_ARGS[:4], "--request-count", "100000", "--request-rate", "100", "--arrival-seed", "42",
         "--num-workers", "16", "--replay-mode", "offline", "--extra-engine-args", '{"block_size":64}']),
}
SLICE = {"poisson": ["duration_s=125"], "azure-conv": ["duration_s=300"]}  # for the spans on/off ratio


def timed_run(path: Path, overrides=(), max_span_steps: int = 1 << 30) -> tuple[float, int]:
    from simcost.scenario.scenario import load_scenario
    from simcost.simulation.simulation import Simulation

    scenario = load_scenario(path, overrides)
    start = time.perf_counter()
    sim = Simulation(scenario, max_span_steps=max_span_steps)
    sim.run()
    return time.perf_counter() - start, len(sim.requests)


def child(name: str, repeats: int) -> dict:
    path = WORKLOADS[name]
    timed_run(path, SLICE[name])  # warm-up: numba kernels load from cache or compile
    walls, n = [], 0
    for _ in range(repeats):
        wall, n = timed_run(path)
        walls.append(wall)
    span_on = statistics.median(timed_run(path, SLICE[name])[0] for _ in range(repeats))
    span_off = timed_run(path, SLICE[name], max_span_steps=1)[0]
    median = statistics.median(walls)
    return {
        "workload": name, "requests": n, "repeats": repeats, "median_wall_s": median,
        "requests_per_wall_s": n / median, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "slice_speedup_spans_vs_steps": span_off / span_on,
    }


def tree_env(root: Path) -> dict[str, str]:
    """The environment of a process that runs `root`'s simcost (first on the path). Bytecode is
    written: an installed simcost has its own (pip compiles it at install), but with
    PYTHONDONTWRITEBYTECODE set (as on some CI and agent machines) every timed process would
    compile all of simcost's sources again (~0.25 s); the untimed warm-up run writes them."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def whole_process(cmd: list[str], cwd: Path, root: Path = ROOT) -> tuple[float, float, float]:
    """(wall s, peak RSS MiB, CPU s: user + system, its threads and reaped children too) of one
    command run to completion, with `root`'s simcost first on the path; its output is discarded.
    On a loaded machine CPU time is the steadier number: wall time also counts waiting for a core."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=tree_env(root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the sum over all children
    wall_s = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {stderr.decode()[-500:]}")
    return wall_s, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


# --memory: the Poisson workload scaled out, 2,048 in / 256 out at 100 req/s on 16 H100 replicas
MEMORY_RATE_PER_S, MEMORY_REPLICAS, MEMORY_OUTPUT_TOKENS = 100.0, 16, 256


def memory_command(work: Path, requests: int, kept: str) -> list[str]:
    return [sys.executable, "-m", "simcost.cli.main", "run", str(WORKLOADS["poisson"]), "--no-progress",
            "--out", str(work / f"run-{requests}"), "--request-records", kept,
            "--set", f"duration_s={requests / MEMORY_RATE_PER_S:g}", "--set", f"workload.arrivals.rate_per_s={MEMORY_RATE_PER_S:g}",
            "--set", f"fleet.replicas={MEMORY_REPLICAS}"]


def machine_line() -> str:
    """What a reader needs to compare numbers across machines: the CPU (two VMs of the same kind
    put simcost at 0.79x and 0.93x the replay on Mooncake: docs/speed.md), its cores and whether
    it has AVX-512 (which numpy's loops use)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features  # numpy 2's, private
        simd = "AVX-512" if features.get("AVX512F") else "AVX2" if features.get("AVX2") else "no AVX2"
    except ImportError:
        simd = "SIMD unknown"
    return f"machine: {model}, {os.cpu_count()} CPUs, {simd}; Python {platform.python_version()}"


def memory_scaling(sizes: list[int], repeats: int, kept: str) -> int:
    """`simcost run` as a whole process at each size (one at a time: a 1M run holds GBs), its
    peak RSS from wait4 (the child's own) and wall time, medians of `repeats` runs after one
    small untimed run that loads numba's cache."""
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="simcost-mem-") as tmp:
        work = Path(tmp)
        whole_process(memory_command(work, 12_000, kept), work)  # warm-up (duration 120 s > warmup_s)
        print(f"{'requests':>10}{'median s':>10}{'peak MiB':>10}{'B/request':>11}{'B/token':>9}   "
              f"(records {kept}, {repeats} run(s) each)")
        for n in sizes:
            samples = [whole_process(memory_command(work, n, kept), work) for _ in range(repeats)]
            wall_s = statistics.median(w for w, _, _ in samples)
            rss_mib = statistics.median(r for _, r, _ in samples)
            per_request = rss_mib * 2**20 / n
            print(f"{n:>10,}{wall_s:>10.1f}{rss_mib:>10.0f}{per_request:>11,.0f}{per_request / MEMORY_OUTPUT_TOKENS:>9.1f}",
                  flush=True)
    return 0


def peer_available(python: str) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('dynamo.replay') is None)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def simcost_run(scenario: Path, overrides: list[str], out: Path) -> list[str]:
    sets = [arg for o in overrides for arg in ("--set", o)]
    return [sys.executable, "-m", "simcost.cli.main", "run", str(scenario), *sets, "--out", str(out), "--no-progress"]


def process_commands(work: Path) -> dict[str, list[str]]:
    """--process: the commands timed as whole processes, by label."""
    return {
        "simcost run": simcost_run(WORKLOADS["poisson"], [], work / "simcost-out"),
        "simcost --help": [sys.executable, "-m", "simcost.cli.main", "--help"],
    }


def peer_commands(work: Path, peer_python: str | None, only: list[str] | None = None,
                  baseline: Path | None = None) -> dict[str, dict[str, list[str]]]:
    """--peer: per workload (those whose label contains a word of `only`, default all),
    simcost's command, the same command for the `baseline` tree (--baseline) and (when
    importable) the replay's."""
    commands = {}
    for i, (label, (scenario, overrides, replay_args)) in enumerate(PEER_WORKLOADS.items()):
        if only and not any(word in label for word in only):
            continue
        commands[label] = {"simcost": simcost_run(scenario, overrides, work / f"simcost-{i}")}
        if baseline is not None:
            commands[label]["baseline"] = simcost_run(scenario, overrides, work / f"baseline-{i}")
        if peer_python:
            commands[label]["dynamo.replay"] = [peer_python, "-m", "dynamo.replay", *replay_args, "--report-json",
                                                str(work / f"dynamo-{i}.json")]
    return commands


def interleaved(commands: dict[str, list[str]], repeats: int, work: Path,
                roots: dict[str, Path] | None = None) -> dict[str, list[tuple[float, float, float]]]:
    """Each command once untimed (numba cache, bytecode), then `repeats` rounds, the commands
    taking turns within a round so a busy machine slows them alike. `roots`: the simcost tree
    a command runs (default this one)."""
    roots = roots or {}
    for label, cmd in commands.items():
        whole_process(cmd, work, roots.get(label, ROOT))
    runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label in commands}
    for _ in range(repeats):
        for label, cmd in commands.items():
            runs[label].append(whole_process(cmd, work, roots.get(label, ROOT)))
    return runs


def medians(samples: list[tuple[float, float, float]]) -> tuple[float, float, float, float]:
    """(median wall s, fastest wall s, median peak RSS MiB, median CPU s)."""
    walls = [wall for wall, _, _ in samples]
    return (statistics.median(walls), min(walls), statistics.median(rss for _, rss, _ in samples),
            statistics.median(cpu for _, _, cpu in samples))


def compare_processes(repeats: int) -> int:
    with tempfile.TemporaryDirectory(prefix="simcost-bench-") as tmp:
        runs = interleaved(process_commands(Path(tmp)), repeats, Path(tmp))
    print(f"{'whole process':<16}{'median s':>10}{'min s':>8}{'peak MiB':>10}   ({repeats} runs each, interleaved)")
    for label, samples in runs.items():
        median, fastest, rss, _ = medians(samples)
        print(f"{label:<16}{median:>10.2f}{fastest:>8.2f}{rss:>10.0f}")
    return 0


def compare_peer(repeats: int, peer_python: str | None, only: list[str] | None = None,
                 baseline: Path | None = None) -> int:
    """Per workload: simcost and the replay as whole processes, interleaved; medians of wall time,
    of CPU time and of peak RSS (wait4's: the largest process of the command's tree), and the
    ratios. `baseline`: another simcost tree (a checkout) run in the same rounds, and this
    tree's ratios to it."""
    print(machine_line())
    print(f"{'workload':<28}{'simcost s':>10}{'replay s':>10}{'ratio':>8}{'CPU ratio':>10}{'simcost MiB':>13}"
          f"{'replay MiB':>12}   (medians of {repeats}, interleaved; ratio < 1: simcost is faster; "
          f"load average {os.getloadavg()[0]:.1f})")
    with tempfile.TemporaryDirectory(prefix="simcost-peer-") as tmp:
        for label, commands in peer_commands(Path(tmp), peer_python, only, baseline).items():
            try:
                runs = interleaved(commands, repeats, Path(tmp), {"baseline": baseline} if baseline else None)
            except RuntimeError as exc:  # one workload failing must not hide the others' numbers
                print(f"{label:<28}failed: {str(exc)[-300:]}", flush=True)
                continue
            ours = medians(runs["simcost"])
            if "dynamo.replay" in runs:
                peer = medians(runs["dynamo.replay"])
                print(f"{label:<28}{ours[0]:>10.2f}{peer[0]:>10.2f}{ours[0] / peer[0]:>7.2f}x"
                      f"{ours[3] / peer[3]:>9.2f}x{ours[2]:>13.0f}{peer[2]:>12.0f}   (CPU s: {ours[3]:.2f} vs "
                      f"{peer[3]:.2f}; load average now {os.getloadavg()[0]:.1f})", flush=True)
            else:
                print(f"{label:<28}{ours[0]:>10.2f}{'-':>10}{'-':>8}{'-':>10}{ours[2]:>13.0f}{'-':>12}", flush=True)
            if "baseline" in runs:
                base = medians(runs["baseline"])
                print(f"{'  baseline ' + str(baseline)[-17:]:<28}{base[0]:>10.2f}   this tree / baseline: "
                      f"{ours[0] / base[0]:.2f}x wall, {ours[3] / base[3]:.2f}x CPU (CPU s: {ours[3]:.2f} vs "
                      f"{base[3]:.2f}; {base[2]:.0f} MiB)", flush=True)
    return 0


def loop_child(scenario: str, overrides: list[str]) -> dict:
    """--loop's child: one workload's `Simulation.run` timed in this process (numba's target
    loaded as `simcost run` loads it, then one untimed run that loads the kernels)."""
    from simcost.scenario.scenario import load_scenario
    from simcost.simulation.simulation import Simulation

    try:
        from simcost.simulation.kernels import load_numba_target
        load_numba_target()
    except ImportError:  # an older baseline tree: its first kernel call loads the target
        pass
    loaded = load_scenario(Path(scenario), overrides)
    Simulation(loaded).run()
    sim = Simulation(loaded)
    wall_s, cpu_s = time.perf_counter(), time.process_time()
    sim.run()
    return {"wall_s": time.perf_counter() - wall_s, "cpu_s": time.process_time() - cpu_s}


def loop_command(scenario: Path, overrides: list[str]) -> list[str]:
    """The --loop child's command for one run of scenario with overrides (maybe none: Poisson
    10k has none, and --loop-set takes one or more)."""
    return [sys.executable, __file__, "--loop-child", str(scenario), *(["--loop-set", *overrides] if overrides else [])]


def runs_child(scenario: str, overrides: list[str], runs: int) -> None:
    """--instructions' child: numba's target as `simcost run` loads it, then `runs` untimed
    `Simulation.run`s of the scenario."""
    from simcost.scenario.scenario import load_scenario
    from simcost.simulation.kernels import load_numba_target
    from simcost.simulation.simulation import Simulation

    load_numba_target()
    loaded = load_scenario(Path(scenario), overrides)
    for _ in range(runs):
        Simulation(loaded).run()


def collected_instructions(valgrind_stderr: str) -> int:
    """callgrind's "Collected : N" (instructions executed) from its report."""
    found = re.search(r"Collected : (\d+)", valgrind_stderr)
    if found is None:
        tail = valgrind_stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"valgrind reported no instruction count: {tail[0]}")
    return int(found.group(1))


def instructions_per_run(root: Path, scenario: Path, overrides: list[str]) -> int:
    """Instructions one `Simulation.run` executes in the tree at root: a process of two runs less
    one of one run, under callgrind, after a first process that fills numba's cache for the CPU
    valgrind reports (it differs from the host's, so the first compiles every kernel: minutes)."""
    def count(runs: int) -> int:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
               "--runs-child", str(scenario), "--runs", str(runs), *(["--loop-set", *overrides] if overrides else [])]
        out = subprocess.run(cmd, cwd=root, env=tree_env(root), capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"{root}: the child failed: {out.stderr.strip().splitlines()[-1:]}")
        return collected_instructions(out.stderr)

    count(1)
    return count(2) - count(1)


def compare_instructions(only: list[str] | None, baseline: Path | None, extra: list[str]) -> int:
    """--instructions: per workload, the instructions of one `Simulation.run` in this tree and the
    baseline, and their ratio. Deterministic to ~0.1 % where wall and CPU seconds move ~25 % on a
    shared VM; blind to cache misses, so memory-bound changes still need --loop."""
    if shutil.which("valgrind") is None:
        print("--instructions needs valgrind (callgrind) on the PATH", file=sys.stderr)
        return 1
    print(machine_line())
    trees = {"this tree": ROOT, **({"baseline": baseline} if baseline else {})}
    for label, (scenario, overrides, _) in PEER_WORKLOADS.items():
        if only and not any(word in label for word in only):
            continue
        counts = {name: instructions_per_run(root, scenario, [*overrides, *extra]) for name, root in trees.items()}
        line = "   ".join(f"{name} {n / 1e6:,.0f} M" for name, n in counts.items())
        ratio = f"   this tree / baseline: {counts['this tree'] / counts['baseline']:.3f}x" if baseline else ""
        print(f"{label:<28}instructions per run: {line}{ratio}", flush=True)
    return 0


def compare_loops(repeats: int, only: list[str] | None, baseline: Path | None, extra: list[str]) -> int:
    """--loop: per workload, `repeats` rounds in which each tree runs once in a fresh process;
    medians and minimums of wall and CPU seconds, and this tree's ratios to the baseline."""
    print(machine_line())
    trees = {"this tree": ROOT, **({"baseline": baseline} if baseline else {})}
    for label, (scenario, overrides, _) in PEER_WORKLOADS.items():
        if only and not any(word in label for word in only):
            continue
        samples: dict[str, list[dict]] = {name: [] for name in trees}
        for _ in range(repeats):
            for name, root in trees.items():
                cmd = loop_command(scenario, [*overrides, *extra])
                out = subprocess.run(cmd, cwd=root, env=tree_env(root), capture_output=True, text=True, check=True)
                samples[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        stats = {name: {key: (statistics.median(r[key] for r in runs), min(r[key] for r in runs))
                        for key in ("wall_s", "cpu_s")} for name, runs in samples.items()}
        for name, stat in stats.items():
            print(f"{label:<28}{name:<11} wall {stat['wall_s'][0]:6.2f} s (min {stat['wall_s'][1]:.2f})   "
                  f"CPU {stat['cpu_s'][0]:6.2f} s (min {stat['cpu_s'][1]:.2f})   ({repeats} runs)")
        if baseline:
            ours, base = stats["this tree"], stats["baseline"]
            print(f"{'':<28}this tree / baseline: wall {ours['wall_s'][0] / base['wall_s'][0]:.3f}x median, "
                  f"{ours['wall_s'][1] / base['wall_s'][1]:.3f}x min; CPU {ours['cpu_s'][0] / base['cpu_s'][0]:.3f}x "
                  f"median, {ours['cpu_s'][1] / base['cpu_s'][1]:.3f}x min", flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=None, help="timed runs (default 3; 1 for --memory)")
    p.add_argument("--process", action="store_true", help="time `simcost run` and `simcost --help` as whole processes")
    p.add_argument("--peer", action="store_true", help="simcost run and Dynamo's replay on issue 20's three workloads")
    p.add_argument("--peer-python", default=sys.executable,
                   help="a Python that can import dynamo.replay (default: this one)")
    p.add_argument("--workloads", nargs="+", metavar="WORD",
                   help="--peer, --loop: only the workloads whose label contains one of these words (e.g. mooncake)")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="--peer, --loop: also time another simcost tree (e.g. `git worktree add DIR main`) in "
                        "the same rounds, and print this tree's ratios to it")
    p.add_argument("--memory", action="store_true", help="peak RSS and wall time of `simcost run` by request count")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="--memory: request counts")
    p.add_argument("--request-records", choices=("full", "sample", "none"), default="full",
                   help="--memory: the request table kept")
    p.add_argument("--loop", action="store_true",
                   help="time the simulation alone (Simulation.run) on --peer's workloads; with --baseline, against it")
    p.add_argument("--loop-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="--loop: scenario overrides added to each workload's (e.g. duration_s=200)")
    p.add_argument("--instructions", action="store_true",
                   help="instructions of one Simulation.run under valgrind's callgrind, per --peer workload; "
                        "with --baseline, the ratio (--workloads and --loop-set as for --loop)")
    p.add_argument("--loop-child", metavar="SCENARIO", help=argparse.SUPPRESS)
    p.add_argument("--runs-child", metavar="SCENARIO", help=argparse.SUPPRESS)
    p.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--only", choices=list(WORKLOADS))
    p.add_argument("--child", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory:
        return memory_scaling(args.sizes, args.repeats or 1, args.request_records)
    args.repeats = args.repeats or 3
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return 0
    if args.loop_child:
        print(json.dumps(loop_child(args.loop_child, args.loop_set)))
        return 0
    if args.runs_child:
        runs_child(args.runs_child, args.loop_set, args.runs)
        return 0
    if args.instructions:
        return compare_instructions(args.workloads, args.baseline.resolve() if args.baseline else None, args.loop_set)
    if args.loop:
        return compare_loops(args.repeats, args.workloads, args.baseline.resolve() if args.baseline else None,
                             args.loop_set)
    if args.peer:
        peer_python = args.peer_python if peer_available(args.peer_python) else None
        if peer_python is None:
            print(f"peer missing: {args.peer_python} cannot import dynamo.replay; this script installs nothing. "
                  "Try: python -m venv /tmp/dynamo-venv && /tmp/dynamo-venv/bin/pip install ai-dynamo==1.4.2, "
                  "then --peer-python /tmp/dynamo-venv/bin/python. Timing simcost alone.", file=sys.stderr)
        return compare_peer(args.repeats, peer_python, args.workloads, args.baseline.resolve() if args.baseline else None)
    if args.process:
        return compare_processes(args.repeats)
    rows = []
    for name in [args.only] if args.only else WORKLOADS:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--repeats", str(args.repeats)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'workload':<12}{'requests':>10}{'median s':>10}{'req/wall s':>12}{'peak MiB':>10}{'spans x':>9}")
    for r in rows:
        print(f"{r['workload']:<12}{r['requests']:>10,}{r['median_wall_s']:>10.2f}{r['requests_per_wall_s']:>12,.0f}"
              f"{r['peak_rss_mib']:>10.0f}{r['slice_speedup_spans_vs_steps']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
