"""The `simcost` command: run a scenario, sweep one key, or check a scenario file.

Bad input of any kind ends with one line on stderr (`simcost: error: <where>: <problem>`) and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from simcost.errors import InputError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"simcost: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simcost", description="Simulate LLM serving latency and cost.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("scenario", help="scenario YAML file")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a scenario key, e.g. engine.max_num_seqs=128 (repeatable)")
        sp.add_argument("--seed", type=int, default=None, help="override the scenario's seed")

    run_p = sub.add_parser("run", help="run one scenario and write its results")
    common(run_p)
    run_p.add_argument("--out", type=Path, default=None, help="results folder (default results/<scenario name>)")
    run_p.add_argument("--records", choices=("csv", "parquet"), default="csv", help="per-request records format")
    run_p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    run_p.set_defaults(func=_cmd_run)

    sweep_p = sub.add_parser("sweep", help="run a scenario at several values of one key")
    common(sweep_p)
    sweep_p.add_argument("--param", required=True, help="the key to vary, e.g. fleet.replicas")
    sweep_p.add_argument("--values", required=True, help="comma-separated values, e.g. 1,2,4,8")
    sweep_p.add_argument("--out", type=Path, default=None, help="results folder (default results/sweep-<param>)")
    sweep_p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes")
    sweep_p.set_defaults(func=_cmd_sweep)

    check_p = sub.add_parser("check", help="validate a scenario (names, sizes, memory fit) without running it")
    common(check_p)
    check_p.set_defaults(func=_cmd_check)
    return p


def _cmd_run(args) -> int:
    from simcost.config import load_scenario
    from simcost.results import format_summary, write_run
    from simcost.sim import Simulation

    scenario = load_scenario(args.scenario, args.overrides, args.seed)
    sim = Simulation(scenario)
    result = sim.run(progress=not args.no_progress)
    out = args.out or Path("results") / scenario.name
    paths = write_run(result, out, args.records)
    print(format_summary(result.summary))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _cmd_sweep(args) -> int:
    from simcost.sweep import format_table, parse_values, sweep

    values = parse_values(args.values)
    if not values:
        raise InputError("--values", f"'{args.values}' holds no values; expected e.g. 1,2,4,8")
    out = args.out or Path("results") / f"sweep-{args.param}"
    rows = sweep(args.scenario, args.param, values, out, args.overrides, args.seed, args.jobs, progress=True)
    print(format_table(rows, args.param))
    print(f"\nwrote {out / 'sweep.csv'}, {out / 'sweep.png'}")
    return 0


def _cmd_check(args) -> int:
    from simcost.config import load_scenario
    from simcost.perf import plan_deployment

    scenario = load_scenario(args.scenario, args.overrides, args.seed)
    dep = plan_deployment(scenario)
    print(f"{args.scenario}: ok; {dep.model.key} ({dep.weight_format}) on {dep.tensor_parallel} x {dep.device.key}: "
          f"{dep.weight_bytes / 1e9:.1f} GB of weights, {dep.num_kv_blocks} KV blocks of {dep.block_size} tokens "
          f"({dep.num_kv_blocks * dep.block_size:,} tokens) per replica, ${dep.price_usd_per_hour:.2f}/hour per replica")
    return 0


if __name__ == "__main__":
    sys.exit(main())
