"""The `simcost` command: run a scenario, sweep one key, check a scenario file, inspect a trace, or
validate against a serving log.

Bad input of any kind ends with one line on stderr (`simcost: error: <where>: <problem>`) and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import sys
import typing
import warnings
from pathlib import Path

from simcost.errors import InputError, closest, required
from simcost.units import S_PER_HOUR


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        _check_counts(args)
        if args.command in SIMULATING and args.command != "run":  # (run: after its figure process forks)
            from simcost.simulation.kernels import load_numba_target

            load_numba_target()  # before a sweep's workers fork, so they inherit it
        if args.command in SIMULATING and not getattr(args, "quiet", False):
            from simcost.simulation.kernels import compile_notice

            with compile_notice():  # a fresh install compiles numba kernels for seconds: say so, once
                status = args.func(args)
        else:
            status = args.func(args)
        sys.stdout.flush()  # a closed pipe raises here, inside the try, not at interpreter exit
        return status
    except BrokenPipeError:
        # the reader went away (`simcost ... | head`): Python's documented recipe, stdout pointed
        # at devnull so the interpreter's final flush does not raise again; 141 = 128 + SIGPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except InputError as exc:
        print(f"simcost: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # results folders are staged, so an interrupted command leaves none
        print("simcost: interrupted; nothing written", file=sys.stderr)
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """simcost's own warnings (a borrowed kernel table, a calibration carried to another device) as
    one line a user reads, not Python's file:line report; other libraries' keep their form."""
    if "simcost" in str(filename) and issubclass(category, UserWarning):
        print(f"simcost: warning: {_one_line(str(message))}", file=file or sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=file or sys.stderr)


# commands that simulate (and so may compile numba kernels on a fresh install)
SIMULATING = ("run", "sweep", "size", "levers", "commitments", "forecast", "validate", "calibrate", "breakeven")

# flags that multiply work: a typo of three extra zeros must be refused, not run for days
MAX_SEEDS = 1000
MAX_BILLING_HOURS = 87_600
MAX_JOBS = 1024


def _check_counts(args) -> None:
    from simcost.scenario.limits import MAX_REPLICAS

    for flag, name, limit in (("--seeds", "seeds", MAX_SEEDS), ("--jobs", "jobs", MAX_JOBS),
                              ("--max-replicas", "max_replicas", MAX_REPLICAS)):
        value = getattr(args, name, None)
        if value is not None and value > limit:
            raise InputError(flag, f"{value}; expected at most {limit:,} (a bound against typos)")


def _one_line(text: str) -> str:
    """Control characters from the input (a newline in a key, a CR in a trace cell) escaped, so
    the error stays one line."""
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]", lambda m: repr(m.group())[1:-1], text)


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, like every other input error (its default
    prints the whole usage first)."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"simcost: error: {self.prog}: {_one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="simcost", description="Simulate LLM serving latency and cost.")
    p.add_argument("--version", action="version", version=f"simcost {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("scenario", help="scenario YAML file")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a scenario key, e.g. engine.max_num_seqs=128 (repeatable)")
        sp.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
        sp.add_argument("--catalog", action="append", default=[], metavar="FILE",
                        help="catalog file adding or replacing devices, models, prices (repeatable; same "
                             "layout as a scenario's catalog: section)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars or status lines on stderr")

    run_p = sub.add_parser("run", help="run one scenario and write its results")
    common(run_p)
    run_p.add_argument("--out", type=Path, default=None, help="results folder (default results/<scenario name>)")
    run_p.add_argument("--records", choices=("csv", "parquet"), default="csv", help="per-request records format")
    run_p.add_argument("--request-records", choices=("full", "sample", "none"), default=None,
                       help="per-request records kept: every row, a reproducible 1%% sample, or none; the summary "
                            "is the same (default: the scenario's output.request_records, full unless set)")
    run_p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    run_p.add_argument("--format", choices=("table", "json", "vllm"), default="table",
                       help="what to print: the table, summary.json, or the latency summary under `vllm bench serve`'s "
                            "result keys (ms); the folder always has all three (vllm_bench.json)")
    run_p.set_defaults(func=_cmd_run)

    sweep_p = sub.add_parser("sweep", help="run a scenario over a grid, random or Latin-hypercube set of key values")
    common(sweep_p)
    sweep_p.add_argument("--param", action="append", default=[], metavar="KEY",
                         help="a key to vary, e.g. fleet.replicas (repeatable: the grid over every --param)")
    sweep_p.add_argument("--values", action="append", default=[], metavar="A,B,C",
                         help="comma-separated values of the --param before it, e.g. 1,2,4,8")
    sweep_p.add_argument("--space", type=Path, default=None,
                         help="space YAML: design grid|random|lhs, points, seed, keys (values or low/high ranges)")
    sweep_p.add_argument("--seeds", type=int, default=1, help="runs per point, seeds = seed + 0..K-1; mean and 95%% CI")
    sweep_p.add_argument("--out", type=Path, default=None, help="results folder (default results/sweep-<keys>)")
    sweep_p.add_argument("--cache", type=Path, default=None, help="result cache folder (default OUT/cache)")
    sweep_p.add_argument("--backend", choices=("local", "ray"), default="local",
                         help="local processes (default) or Ray (pip install 'simcost[ray]')")
    sweep_p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray instance)")
    sweep_p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel runs (processes or Ray CPUs)")
    sweep_p.add_argument("--no-run-folders", action="store_true", help="write the table only, not a results folder per run")
    sweep_p.set_defaults(func=_cmd_sweep)

    fc_p = sub.add_parser("forecast", help="project monthly spend and SLO under a load growth path")
    common(fc_p)
    fc_p.add_argument("--months", type=int, default=12, help="months to project (default 12)")
    fc_p.add_argument("--growth", type=float, default=1.0, help="load multiplier per month, compounding (e.g. 1.08)")
    fc_p.add_argument("--step", action="append", default=[], metavar="MONTH:FACTOR",
                      help="load x FACTOR from MONTH on, e.g. 4:2 for a launch (repeatable)")
    fc_p.add_argument("--seeds", type=int, default=3, help="seeds per month for the uncertainty band (default 3)")
    fc_p.add_argument("--budget-usd-per-month", type=float, default=None, help="flag the first month above this")
    fc_p.add_argument("--hours-per-month", type=float, default=730.0, help="hours billed per month (default 730)")
    fc_p.add_argument("--resize", action="store_true", help="each month, the smallest fleet.replicas meeting the SLO")
    fc_p.add_argument("--max-replicas", type=int, default=None, help="--resize limit (default 4x the scenario's)")
    fc_p.add_argument("--out", type=Path, default=None, help="results folder (default results/forecast-<scenario name>)")
    fc_p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes")
    fc_p.set_defaults(func=_cmd_forecast)

    check_p = sub.add_parser("check", help="validate a scenario (names, sizes, memory fit) without running it")
    common(check_p)
    check_p.set_defaults(func=_cmd_check)

    cal_p = sub.add_parser("calibrate", help="fit a device-model pair's roofline factors to measured step times, "
                                             "or to a serving log (--log with --scenario)")
    cal_p.add_argument("measurements", type=Path, nargs="?", help="CSV of step times (Splitwise or generic layout)")
    cal_p.add_argument("--device", help="device catalog key, e.g. a100-80gb (step times)")
    cal_p.add_argument("--model", help="model catalog key, e.g. llama-2-70b (step times)")
    cal_p.add_argument("--log", type=Path, default=None, help="a serving log to fit instead (as simcost validate reads)")
    cal_p.add_argument("--scenario", type=Path, default=None, help="with --log: the deployment that served it")
    cal_p.add_argument("--columns", default=None, metavar="MAP", help="with --log: its column mapping (see validate)")
    cal_p.add_argument("--fit", default=None, metavar="A,B", help="with --log: factors to fit (default mfu,mbu)")
    cal_p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="with --log: override a scenario key (repeatable)")
    cal_p.add_argument("--tensor-parallel", type=int, action="append", default=[], metavar="N",
                       help="fit only rows with this tensor parallelism (repeatable; default all)")
    cal_p.add_argument("--weight-format", default=None, help="weight format measured (default the model's)")
    cal_p.add_argument("--loss", choices=("soft_l1", "linear", "huber", "cauchy"), default="soft_l1",
                       help="least-squares loss on relative residuals (default soft_l1, robust)")
    cal_p.add_argument("--hardware", default=None, metavar="NAME",
                       help="the device as the file's hardware column names it (default: the catalog key or an alias)")
    cal_p.add_argument("--model-name", default=None, metavar="NAME",
                       help="the model as the file's model column names it (default: the catalog key or an alias)")
    cal_p.add_argument("--fix", action="append", default=[], metavar="FACTOR",
                       help="hold a factor at the catalog's value (repeatable): mfu, mbu, step_overhead_s, "
                            "allreduce_latency_s, prefill_overhead_s, attention_efficiency, ...")
    cal_p.add_argument("--out", type=Path, default=None, help="profile YAML to write (scenario key perf.profile)")
    cal_p.set_defaults(func=_cmd_calibrate)

    val_p = sub.add_parser("validate", help="replay a real serving log on a scenario's deployment; simulated vs measured")
    common(val_p)
    val_p.add_argument("log", type=Path, help="per-request log: vllm bench serve --save-detailed JSON, JSONL of vLLM "
                                               "request stats, or a CSV/JSONL read through --columns")
    val_p.add_argument("--columns", default=None, metavar="MAP",
                       help="column mapping, e.g. arrival_s=ts,prompt_tokens=in,output_tokens=out,ttft_s=ttft,e2e_s=lat"
                            "[,time_unit=ms] (or first_token_s=...,last_token_s=... instead of ttft_s, e2e_s)")
    val_p.add_argument("--out", type=Path, default=None, help="results folder (default results/validate-<scenario name>)")
    val_p.set_defaults(func=_cmd_validate)

    cat_p = sub.add_parser("catalog", help="list the device, model or price catalog, or import a model")
    cat_p.add_argument("table", nargs="?", choices=("devices", "models", "prices", "import-model"), default="devices",
                       help="which catalog (default devices); import-model CONFIG_JSON prints the models.yaml "
                            "entry of a Hugging Face config.json")
    cat_p.add_argument("config_json", nargs="?", type=Path, default=None, help="import-model: a local config.json")
    cat_p.add_argument("--key", default=None, help="import-model: the catalog key (default from the config's name)")
    cat_p.add_argument("--catalog", action="append", default=[], metavar="FILE",
                       help="list the bundled catalog with this catalog file's entries (repeatable)")
    cat_p.add_argument("--wide", action="store_true", help="devices: every column (default: the ones that fit 120 columns)")
    cat_p.set_defaults(func=_cmd_catalog)

    trace_p = sub.add_parser("trace", help="look at a request trace before simulating it")
    trace_sub = trace_p.add_subparsers(dest="trace_command", required=True)
    insp_p = trace_sub.add_parser("inspect", help="rate over time, burstiness, token lengths, sessions, prefix reuse")
    insp_p.add_argument("file", help="bundled trace name (e.g. azure_conv) or a trace file")
    insp_p.add_argument("--columns", default=None, metavar="KEY=COLUMN,...",
                        help="generic CSV/JSONL column mapping, e.g. arrival=t,arrival_unit=ms,input_tokens=prompt,"
                             "output_tokens=completion[,session=conv,tenant=team]")
    insp_p.add_argument("--bin-s", type=float, default=None, help="rate bin width in seconds (default: chosen from the span)")
    insp_p.add_argument("--plot", type=Path, default=None, help="PNG to write (rate, gaps, token lengths)")
    insp_p.add_argument("--json", type=Path, default=None, help="JSON file to write with every number")
    insp_p.set_defaults(func=_cmd_trace_inspect)

    size_p = sub.add_parser("size", help="the cheapest fleet meeting the SLO: devices x replicas x knobs x pricing")
    common(size_p)
    size_p.add_argument("--devices", required=True, help="comma-separated device keys, e.g. h100-sxm,a100-80gb,l40s")
    size_p.add_argument("--tensor-parallel", default=None, help="comma-separated degrees, e.g. 1,2 (default the scenario's)")
    size_p.add_argument("--policies", default=None, help="comma-separated engine.policy values, e.g. chunked,prefill_first")
    size_p.add_argument("--pricing", action="append", default=[], metavar="YAML",
                        help="a fleet.pricing option, e.g. '{model: spot, spot_usd_per_device_hour: 2.5}' (repeatable; "
                             "default the scenario's)")
    size_p.add_argument("--max-replicas", type=int, default=16, help="largest fleet.replicas tried (default 16)")
    size_p.add_argument("--pool", default=None, metavar="NAME",
                        help="fleet.pools: the pool to size (its device and replicas); the others stay as written")
    size_p.add_argument("--seeds", type=int, default=1, help="each point must meet the SLO on K seeds (default 1)")
    size_p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes")
    size_p.add_argument("--out", type=Path, default=None,
                        help="results folder (default results/size-<scenario name>): result.json, options.csv, sizing.png, "
                             "vllm-serve.sh, kubernetes.yaml")
    size_p.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    size_p.set_defaults(func=_cmd_size)

    cm_p = sub.add_parser("commitments", help="choose the reserved or savings-plan commitment for a run's demand")
    common(cm_p)
    cm_p.add_argument("--reserved-usd-per-device-hour", type=float, default=None,
                      help="effective reserved price per device-hour (default: the scenario's reserved pricing, "
                           "else 35%% off on-demand, an assumption)")
    cm_p.add_argument("--discount", type=float, default=None,
                      help="savings-plan discount, 0-1 (default: the scenario's, else 0.30, an assumption)")
    cm_p.add_argument("--basis", choices=("provisioned", "busy"), default="provisioned",
                      help="demand: the whole static fleet (default) or devices running steps (autoscaled lower bound)")
    cm_p.add_argument("--period-s", type=float, default=S_PER_HOUR,
                      help="simulated seconds per billing hour, for time-compressed scenarios (default 3600)")
    cm_p.add_argument("--no-week", action="store_true", help="plan over the simulated hours only (default: tile to a week)")
    cm_p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    cm_p.add_argument("--out", type=Path, default=None,
                      help="results folder (default results/commitments-<scenario name>): result.json, "
                           "commitments.csv, commitments.png")
    cm_p.add_argument("--json", action="store_true", help="print the plan as JSON instead of the table")
    cm_p.set_defaults(func=_cmd_commitments)

    lev_p = sub.add_parser("levers", help="apply each optimisation lever alone; rank by ROI")
    common(lev_p)
    lev_p.add_argument("--levers", type=Path, default=None, metavar="YAML",
                       help="per-lever effort_weeks, quality_risk and knobs, and usd_per_engineer_week")
    lev_p.add_argument("--only", default=None, help="comma-separated levers, e.g. int8,spot (default all enabled)")
    lev_p.add_argument("--smaller-model", default=None, metavar="KEY", help="the smaller model's catalog key")
    lev_p.add_argument("--fixed-fleet", action="store_true",
                       help="keep the scenario's replicas (default: each row at its smallest fleet meeting the SLO)")
    lev_p.add_argument("--max-replicas", type=int, default=16, help="largest fleet.replicas tried (default 16)")
    lev_p.add_argument("--seeds", type=int, default=1, help="seeds per point (default 1)")
    lev_p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes")
    lev_p.add_argument("--out", type=Path, default=None, help="results folder (default results/levers-<scenario name>)")
    lev_p.set_defaults(func=_cmd_levers)

    be_p = sub.add_parser("breakeven", help="the monthly volume above which self-hosting is cheaper than each API")
    common(be_p)
    be_p.add_argument("--api", action="append", default=[], metavar="PROVIDER:MODEL",
                      help="an API option besides the scenario's fleet.api_pools, e.g. openai:gpt-4o-mini (repeatable; "
                           "with neither, every model of the API price list)")
    be_p.add_argument("--min-replicas", type=int, default=1, help="replicas kept at any volume (default 1)")
    be_p.add_argument("--redundancy", type=int, default=0, help="replicas beyond the needed count (N+k; default 0)")
    be_p.add_argument("--seeds", type=int, default=1, help="each point must meet the SLO on K seeds (default 1)")
    be_p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes")
    be_p.add_argument("--out", type=Path, default=None, help="results folder (default results/breakeven-<scenario name>)")
    be_p.set_defaults(func=_cmd_breakeven)

    rep_p = sub.add_parser("report", help="one self-contained HTML page of a results folder")
    rep_p.add_argument("results_dir", type=Path,
                       help="a folder written by simcost run, sweep, size, commitments, levers or forecast")
    rep_p.add_argument("--out", type=Path, default=None, help="HTML file to write (default RESULTS_DIR/report.html)")
    rep_p.set_defaults(func=_cmd_report)
    return p


def _version() -> str:
    """The installed distribution's version; a source tree that is not installed has only the package's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("simcost")
    except PackageNotFoundError:
        import simcost

        return simcost.__version__


def _cmd_run(args) -> int:
    # no garbage collection while the imports and numba's target create their ~10^5 long-lived
    # objects (its full passes over them cost ~0.05-0.1 s); on again before the run (_run_and_write)
    gc.disable()
    try:
        # the simulation stack (numba, SimPy, simcost) first: the figure process forked next inherits
        # it, where importing it again for its inputs' classes cost ~0.5 s of CPU the run competes with
        import simcost.results.writer  # noqa: F401  (imports simcost.simulation.simulation)
        from simcost.results.background import Background, BackgroundFailure

        with Background() as figures:  # then matplotlib, in the child, while this process simulates
            try:
                return _run_and_write(args, figures)
            except BackgroundFailure as exc:
                print(f"simcost: error: not written: {exc}; the run's other files are in {exc.folder}", file=sys.stderr)
                return 1
    finally:
        gc.enable()


def _run_and_write(args, figures) -> int:
    from simcost.results.writer import check_run_folder, write_run
    from simcost.scenario.scenario import load_scenario
    from simcost.simulation.kernels import load_numba_target
    from simcost.simulation.simulation import Simulation

    scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
    load_numba_target()  # (before Simulation: planning a deployment may call a kernel already)
    gc.freeze()  # the modules' ~10^5 objects: never scanned again by the run's full collections
    gc.enable()
    sim = Simulation(scenario)  # plans the deployment: a model that does not fit fails here, writing nothing
    out = _out_dir(args.out or Path("results") / scenario.name)
    quiet = args.no_progress or args.quiet  # (--no-progress drops the bar, not main()'s compile notice)
    check_run_folder(out, args.records)  # a missing pyarrow or a folder in the way: before the run, not after
    result = sim.run(progress=not quiet)
    print(_run_output(result, args.format), flush=True)  # before writing: a full disk must not lose the answer
    if not quiet and sys.stderr.isatty():  # the files take seconds on a long run: say what is happening
        print(f"writing {out} ...", file=sys.stderr, flush=True)
    paths = write_run(result, out, args.records, args.request_records, figures)
    # JSON formats keep stdout parseable: the list of files goes to stderr
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}", file=sys.stdout if args.format == "table" else sys.stderr)
    return 0


def _run_output(result, fmt: str) -> str:
    """What `simcost run --format` prints: the table, or summary.json / vLLM's result keys as JSON."""
    import json

    from simcost.results.vllm_bench import vllm_bench
    from simcost.results.writer import format_summary

    if fmt == "table":
        return format_summary(result.summary)
    return json.dumps(result.summary if fmt == "json" else vllm_bench(result), indent=2)


def _out_dir(path: Path) -> Path:
    """The results folder, checked now but not created (a command refused later must leave
    nothing behind): a folder that cannot be written fails before the work is done, not after."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("--out", f"{path} is a file, not a folder")
    ancestor = next(p for p in (path, *path.parents) if p.exists())
    if not ancestor.is_dir():
        raise InputError("--out", f"cannot create {path} ({ancestor} is a file)")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError("--out", f"cannot create {path} ({ancestor} is not writable)")
    return path


def _cmd_sweep(args) -> int:
    from simcost.analysis.sweep import format_table, parse_values, sweep
    from simcost.analysis.sweep_space import load_space, space_from_flags

    values = []
    for text in args.values:
        values.append(parse_values(text))
        if not values[-1]:
            raise InputError("--values", f"'{text}' holds no values; expected e.g. 1,2,4,8")
    if not args.param and args.space is None:
        raise InputError("sweep", "nothing to vary; give --param KEY --values A,B,C or --space SPACE.yaml")
    if args.address and args.backend != "ray":
        raise InputError("--address", "is for --backend ray")
    flags = space_from_flags(args.param, values) if args.param or args.values else None
    space = load_space(args.space, flags) if args.space else required(flags, "--param")  # checked above
    out = _out_dir(args.out or Path("results") / f"sweep-{args.space.stem if args.space else '+'.join(args.param)}")
    try:
        result = sweep(args.scenario, space, out, args.overrides, args.seed, args.seeds, args.jobs, args.backend,
                       args.address, args.cache, not args.no_run_folders, progress=not args.quiet,
                       catalog_files=tuple(args.catalog))
    except KeyboardInterrupt:
        print(f"\nsimcost: interrupted; finished runs are cached in {args.cache or out / 'cache'}: "
              "the same command resumes", file=sys.stderr)
        return 130
    print(format_table(result.rows, result.keys))
    print(f"\n{len(result.rows)} points: {result.executed} runs simulated, {result.cached} from the cache, "
          f"{result.failed} points failed")
    print(f"wrote {', '.join(str(p) for p in result.paths.values())}")
    if result.failed == len(result.rows):
        print(f"simcost: every point failed; the first: {result.rows[0]['error']}", file=sys.stderr)
        return 1
    return 0


def _cmd_forecast(args) -> int:
    from simcost.analysis.forecast import GrowthPath, forecast, parse_step
    from simcost.analysis.forecast_outputs import format_report, write_outputs
    from simcost.results.folder import staged_folder
    from simcost.scenario.scenario import load_scenario

    path = GrowthPath(args.months, args.growth, tuple(parse_step(s) for s in args.step))
    scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
    out = _out_dir(args.out or Path("results") / f"forecast-{scenario.name}")
    result = forecast(scenario, path, args.seeds, args.hours_per_month, args.budget_usd_per_month, args.jobs,
                      args.resize, args.max_replicas, progress=not args.quiet)
    with staged_folder(out, ()) as tmp:  # whole or not at all, like a run folder
        staged = write_outputs(result, tmp)
    print(format_report(result))
    print(f"\nwrote {', '.join(str(out / path.name) for path in staged)}")
    return 0


def _cmd_check(args) -> int:
    from simcost.perf.deployment import fleet_pools, plan_deployment
    from simcost.scenario.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
    if scenario.fleet.pools is not None:  # each pool is planned on its own hardware, model and price
        pools = fleet_pools(scenario)
        print(f"{args.scenario}: ok; {len(pools)} pools")
        for pool in pools:
            print(f"  {pool.name}: {pool.replicas} x " + _deployment_line(pool.deployment))
    else:
        print(f"{args.scenario}: ok; " + _deployment_line(plan_deployment(scenario)))
    for k, api in enumerate(scenario.fleet.api_pools):  # hosted APIs: their resolved prices and limits
        t = api.terms(f"fleet.api_pools[{k}]")
        print(f"  api {api.name} ({api.role}): {t.provider_name} {t.model}, ${t.input_usd_per_1m:g} in / "
              f"${t.output_usd_per_1m:g} out per 1M tokens" + (f" less {t.discount:.0%} (batch)" if t.discount else "")
              + f", {t.requests_per_min:,.0f} requests and {t.tokens_per_min:,.0f} tokens per minute")
    return 0


def _deployment_line(dep) -> str:
    ep = getattr(dep, "expert_parallel", 1)
    layout = f" (expert parallel {ep}, data-parallel attention {dep.data_parallel})" if ep > 1 else ""
    return (f"{dep.model.key} ({dep.weight_format}) on {dep.tensor_parallel * dep.data_parallel} x {dep.device.key}"
            f"{layout}: "
            f"{dep.weight_bytes / 1e9:.1f} GB of weights, {dep.num_kv_blocks} KV blocks of {dep.block_size} tokens "
            f"({dep.num_kv_blocks * dep.block_size:,} tokens) per replica, ${dep.price_usd_per_hour:.2f}/hour per replica")


def _cmd_calibrate(args) -> int:
    from simcost.perf.calibrate import Pair, fit_factors, fit_warnings, format_table, write_profile
    from simcost.perf.measurements import EFFICIENCY_FACTORS, read_points

    if args.log is not None:
        from simcost.analysis.calibrate_log import calibrate_command

        return calibrate_command(args)
    for flag, value in (("measurements", args.measurements), ("--device", args.device), ("--model", args.model)):
        if value is None:
            raise InputError(flag, "missing; calibrate needs a step-time CSV with --device and --model, "
                                   "or --log LOG --scenario SCENARIO")

    for name in args.fix:
        if name not in EFFICIENCY_FACTORS:
            raise InputError("--fix", f"unknown factor '{name}'{closest(name, EFFICIENCY_FACTORS)}; "
                                      f"expected one of {', '.join(EFFICIENCY_FACTORS)}")
    pair = Pair.of(args.device, args.model, args.weight_format)
    points = read_points(args.measurements, pair.device.key, pair.model.key, tuple(args.tensor_parallel),
                         hardware_name=args.hardware, model_name=args.model_name)
    fit = fit_factors(pair, points, args.loss, tuple(args.fix))
    print(format_table(points, fit.predicted_s))
    print("\nfitted: " + ", ".join(f"{n} = {v:.4g}" for n, v in fit.factors.items() if n not in fit.fixed))
    for name in fit.fixed:
        print(f"held: {name} = {fit.factors[name]:.4g} ({fit.reasons[name]})")
    for line in fit_warnings(fit):
        print(f"warning: {line}")
    if args.out:
        write_profile(args.out, pair, fit, points, args.measurements)
        print(f"wrote {args.out} (use it with perf.profile: {args.out})")
    return 0


def _cmd_validate(args) -> int:
    from simcost.analysis.validate import format_report, validate, validation_scenario, write_outputs
    from simcost.workload.serving_log import LogColumns, load_log

    log = load_log(args.log, LogColumns.parse(args.columns) if args.columns else None)
    scenario = validation_scenario(args.scenario, args.log, args.overrides, args.seed, args.catalog)
    out = _out_dir(args.out or Path("results") / f"validate-{scenario.name}")
    report, measured, simulated = validate(scenario, log)
    print(format_report(report))  # before writing: a full disk must not lose the answer
    print(f"\nwrote {', '.join(str(p) for p in write_outputs(report, measured, simulated, out))}")
    return 0


def _cmd_catalog(args) -> int:
    from simcost.catalog.listing import format_catalog

    if args.table == "import-model":
        return _cmd_import_model(args)
    if args.config_json is not None or args.key is not None:
        raise InputError("catalog", "a config.json and --key are for import-model")
    print(format_catalog(args.table, catalog=_with_catalog_files(args.catalog), wide=args.wide))
    return 0


def _with_catalog_files(files: list[str]):
    """The bundled catalog plus `--catalog` files' entries, or None for the bundled one alone."""
    from simcost.catalog.catalog import UserCatalog, read_catalog_file

    parts = [part for name in files for part in read_catalog_file(Path(name), f"--catalog {name}")]
    return UserCatalog.from_parts(parts).catalog if parts else None


def _cmd_import_model(args) -> int:
    import yaml

    from simcost.catalog.catalog import bundled_catalog
    from simcost.catalog.hf_config import entry_from_file

    if args.config_json is None:
        raise InputError("catalog import-model", "missing the config.json to import")
    key, entry = entry_from_file(args.config_json, args.key)
    bundled_catalog().with_entries({"models": {key: entry}}, str(args.config_json))  # checked as the catalog checks it
    print(f"# add to a catalog file's models: section (or use model: {{config_json: {args.config_json}}})")
    print(yaml.safe_dump({key: entry}, sort_keys=False, width=120), end="")
    return 0


def _cmd_trace_inspect(args) -> int:
    from simcost.workload.trace_inspect import (
        format_inspection,
        inspect_trace,
        parse_columns,
        plot_inspection,
        write_json,
    )
    from simcost.workload.traces import load_trace

    columns = parse_columns(args.columns) if args.columns else None
    trace = load_trace(args.file, columns, key="trace inspect")
    info = inspect_trace(trace, args.bin_s)
    print(format_inspection(info))
    written = []
    if args.plot:
        written.append(plot_inspection(trace, info, args.plot))
    if args.json:
        written.append(write_json(info, args.json))
    if written:
        print(f"\nwrote {', '.join(map(str, written))}")
    return 0


def _cmd_size(args) -> int:
    from simcost.analysis.sizing import format_sizing, size
    from simcost.analysis.sizing_outputs import parse_options, sizing_json, write_sizing
    from simcost.scenario.scenario import load_scenario

    options = parse_options(args.devices, args.tensor_parallel, args.policies, args.pricing)
    scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
    out = _out_dir(args.out or Path("results") / f"size-{scenario.name}")
    result = size(scenario, options, args.max_replicas, args.seeds, args.jobs, pool=args.pool, progress=not args.quiet)
    paths = write_sizing(result, scenario, out)
    _report(format_sizing(result), sizing_json(result), paths, args.json)
    return 0


def _report(text: str, data: dict, paths: dict[str, Path], as_json: bool) -> None:
    """The table and the files written, or with --json the result alone on stdout (files named on stderr)."""
    import json

    written = f"wrote {', '.join(map(str, paths.values()))}"
    if as_json:
        print(json.dumps(data, indent=2))
        print(written, file=sys.stderr)
    else:
        print(text)
        print(f"\n{written}")


def _cmd_commitments(args) -> int:
    from simcost.analysis.commitments import format_plan, plan_from_run
    from simcost.analysis.commitments_outputs import plan_json, write_commitments
    from simcost.scenario.scenario import load_scenario
    from simcost.simulation.simulation import Simulation

    if args.discount is not None and not 0 <= args.discount < 1:  # before a run, not after it
        raise InputError("--discount", f"{args.discount}; expected 0 <= discount < 1")
    if args.reserved_usd_per_device_hour is not None and not args.reserved_usd_per_device_hour >= 0:
        raise InputError("--reserved-usd-per-device-hour", f"{args.reserved_usd_per_device_hour}; expected >= 0")
    if not (math.isfinite(args.period_s) and args.period_s > 0):
        raise InputError("--period-s", f"{args.period_s}; expected a number of seconds > 0")
    scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
    if scenario.duration_s is not None and scenario.duration_s / args.period_s > MAX_BILLING_HOURS:
        raise InputError("--period-s", f"{args.period_s:g} s makes {scenario.duration_s / args.period_s:.3g} billing hours of "
                         f"duration_s={scenario.duration_s:g}; expected at most {MAX_BILLING_HOURS:,} (ten years)")
    out = _out_dir(args.out or Path("results") / f"commitments-{scenario.name}")
    result = Simulation(scenario).run(progress=not (args.no_progress or args.quiet))
    plan = plan_from_run(result, args.reserved_usd_per_device_hour, args.discount, args.basis, args.period_s,
                         week=not args.no_week)
    paths = write_commitments(plan, scenario.name, out)
    _report(format_plan(plan), plan_json(plan, scenario.name), paths, args.json)
    return 0



def _cmd_levers(args) -> int:
    from simcost.analysis.levers import study
    from simcost.analysis.levers_config import load_levers
    from simcost.analysis.levers_outputs import format_study, write_outputs
    from simcost.results.folder import staged_folder
    from simcost.scenario.scenario import load_scenario

    overrides = {"smaller_model": {"model": args.smaller_model}} if args.smaller_model else None
    cfg = load_levers(args.levers, overrides)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip()) if args.only else None
    scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
    out = _out_dir(args.out or Path("results") / f"levers-{scenario.name}")
    result = study(scenario, cfg, only, not args.fixed_fleet, args.max_replicas, args.seeds, args.jobs,
                   progress=not args.quiet)
    with staged_folder(out, ()) as tmp:  # whole or not at all, like a run folder
        paths = [out / path.name for path in write_outputs(result, tmp)]
    print(format_study(result))
    print(f"\nwrote {', '.join(map(str, paths))}")
    return 0


def _cmd_breakeven(args) -> int:
    from simcost.analysis.breakeven import BREAKEVEN_FILES, breakeven, format_breakeven, write_outputs
    from simcost.results.folder import check_targets, staged_folder
    from simcost.scenario.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
    out = _out_dir(args.out or Path("results") / f"breakeven-{scenario.name}")
    check_targets(out, BREAKEVEN_FILES)
    result = breakeven(scenario, args.api, args.min_replicas, args.redundancy, args.seeds, args.jobs)
    with staged_folder(out, BREAKEVEN_FILES) as tmp:  # whole or not at all, like a run folder
        paths = [out / path.name for path in write_outputs(result, tmp)]
    print(format_breakeven(result))
    print(f"\nwrote {', '.join(map(str, paths))}")
    return 0


def _cmd_report(args) -> int:
    from simcost.analysis.report_plans import write_any_report

    print(f"wrote {write_any_report(args.results_dir, args.out)}")
    return 0


def entry() -> typing.NoReturn:
    """The `simcost` command: `main()`, then the exit handlers (atexit: logging, multiprocessing,
    temporary files) and an immediate exit. Tearing the interpreter down after a run (numba's
    compiled code, LLVM, every module) took longer than writing the results (0.5-1.5 s on a
    2-core machine); nothing is left to write by then, and the output streams are flushed first."""
    status = main()
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(status)  # a profiler or coverage writes its data after this returns: exit normally
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader went away, or the stream was closed
            pass
    os._exit(status)


if __name__ == "__main__":
    entry()
