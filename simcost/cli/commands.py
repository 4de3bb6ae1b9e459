"""What each `simcost` subcommand does with its parsed arguments (`simcost.cli.parser` maps
them). Each imports what it needs when it runs, so `simcost --help` and a bad flag stay fast."""

from __future__ import annotations

import gc
import math
import os
import sys
from pathlib import Path

from simcost.errors import InputError, closest, required

MAX_BILLING_HOURS = 87_600  # commitments --period-s: a bound against typos (ten years)


def cmd_run(args) -> int:
    # no garbage collection while the imports and numba's target create their ~10^5 long-lived
    # objects (its full passes over them cost ~0.05-0.1 s); on again before the run (run_and_write)
    gc.disable()
    try:
        # the simulation stack (numba, SimPy, simcost) first: the figure process forked next inherits
        # it, where importing it again for its inputs' classes cost ~0.5 s of CPU the run competes with
        import simcost.results.writer  # noqa: F401  (imports simcost.simulation.simulation)
        from simcost.results.background import Background, BackgroundFailure
        from simcost.scenario.scenario import load_scenario

        scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
        # then matplotlib, in the child, while this process simulates; first, the run's traces
        with Background(prepare=traces_parser(scenario)) as figures:
            try:
                return run_and_write(args, scenario, figures)
            except BackgroundFailure as exc:
                print(f"simcost: error: not written: {exc}; the run's other files are in {exc.folder}", file=sys.stderr)
                return 1
    finally:
        gc.enable()


def traces_parser(scenario):
    """What the figure process does first for a run that replays or resamples trace files:
    parse them (~0.2 s for the Mooncake conversation trace) while this process loads numba's
    target, instead of after it; None for a run without traces."""
    import functools

    from simcost.workload.requests import trace_names
    from simcost.workload.traces import parse_traces

    names = trace_names(scenario)
    return functools.partial(parse_traces, names) if names else None


def run_and_write(args, scenario, figures) -> int:
    from simcost.results.run_figures import EarlyFigures
    from simcost.results.writer import check_run_folder, write_run
    from simcost.simulation import precompile
    from simcost.simulation.kernels import load_numba_target
    from simcost.simulation.simulation import Simulation
    from simcost.workload.traces import adopt

    load_numba_target()  # (before Simulation: planning a deployment may call a kernel already)
    precompile.start()  # a cold cache (a fresh install): the other core compiles kernels too
    adopt(figures.prepared() or [])  # the traces the figure process parsed meanwhile (if it could)
    gc.freeze()  # the modules' ~10^5 objects: never scanned again by the run's full collections
    gc.enable()
    sim = Simulation(scenario)  # plans the deployment: a model that does not fit fails here, writing nothing
    out = out_dir(args.out or Path("results") / scenario.name)
    quiet = args.no_progress or args.quiet  # (--no-progress drops the bar, not main()'s compile notice)
    check_run_folder(out, args.records)  # a missing pyarrow or a folder in the way: before the run, not after
    result = sim.run(progress=not quiet, listener=EarlyFigures(figures))  # figures drawn as their inputs are final
    print(run_output(result, args.format), flush=True)  # before writing: a full disk must not lose the answer
    if not quiet and sys.stderr.isatty():  # the files take seconds on a long run: say what is happening
        print(f"writing {out} ...", file=sys.stderr, flush=True)
    paths = write_run(result, out, args.records, args.request_records, figures)
    # JSON formats keep stdout parseable: the list of files goes to stderr
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}", file=sys.stdout if args.format == "table" else sys.stderr)
    return 0


def run_output(result, fmt: str) -> str:
    """What `simcost run --format` prints: the table, or summary.json / vLLM's result keys as JSON."""
    import json

    from simcost.results.vllm_bench import vllm_bench
    from simcost.results.writer import format_summary

    if fmt == "table":
        return format_summary(result.summary)
    return json.dumps(result.summary if fmt == "json" else vllm_bench(result), indent=2)


def out_dir(path: Path) -> Path:
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


def cmd_sweep(args) -> int:
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
    out = out_dir(args.out or Path("results") / f"sweep-{args.space.stem if args.space else '+'.join(args.param)}")
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


def cmd_forecast(args) -> int:
    from simcost.analysis.forecast import GrowthPath, forecast, parse_step
    from simcost.analysis.forecast_outputs import format_report, write_outputs
    from simcost.results.folder import staged_folder
    from simcost.scenario.scenario import load_scenario

    path = GrowthPath(args.months, args.growth, tuple(parse_step(s) for s in args.step))
    scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
    out = out_dir(args.out or Path("results") / f"forecast-{scenario.name}")
    result = forecast(scenario, path, args.seeds, args.hours_per_month, args.budget_usd_per_month, args.jobs,
                      args.resize, args.max_replicas, progress=not args.quiet)
    with staged_folder(out, ()) as tmp:  # whole or not at all, like a run folder
        staged = write_outputs(result, tmp)
    print(format_report(result))
    print(f"\nwrote {', '.join(str(out / path.name) for path in staged)}")
    return 0


def cmd_check(args) -> int:
    from simcost.perf.deployment import fleet_pools, plan_deployment
    from simcost.perf.step_model import step_params
    from simcost.scenario.fleet_plan import fleet_plan
    from simcost.scenario.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
    if scenario.fleet.pools is not None:  # each pool is planned on its own hardware, model and price
        pools = fleet_pools(scenario)
        plans = fleet_plan(scenario)
        for plan, pool in zip(plans, pools):
            step_params(plan.scenario, pool.deployment)  # what run builds next: a perf.table that cannot be read fails here too
        print(f"{args.scenario}: ok; {len(pools)} pools")
        for plan, pool in zip(plans, pools):
            print(f"  {pool.name}: {pool.replicas} x " + deployment_line(pool.deployment)
                  + tables_line(plan.scenario, pool.deployment))
    else:
        dep = plan_deployment(scenario)
        step_params(scenario, dep)
        print(f"{args.scenario}: ok; " + deployment_line(dep) + tables_line(scenario, dep))
    for k, api in enumerate(scenario.fleet.api_pools):  # hosted APIs: their resolved prices and limits
        t = api.terms(f"fleet.api_pools[{k}]")
        print(f"  api {api.name} ({api.role}): {t.provider_name} {t.model}, ${t.input_usd_per_1m:g} in / "
              f"${t.output_usd_per_1m:g} out per 1M tokens" + (f" less {t.discount:.0%} (batch)" if t.discount else "")
              + f", {t.requests_per_min:,.0f} requests and {t.tokens_per_min:,.0f} tokens per minute")
    return 0


def tables_line(scenario, dep) -> str:
    """The step model a device with its own kernel tables (catalog kernel_tables) runs: '' otherwise."""
    from simcost.perf.model_choice import choose_perf_model

    if getattr(dep.device, "kernel_tables", None) is None:
        return ""
    model, why = choose_perf_model(scenario, dep)
    return f"\n  step model: {model} ({why})"


def deployment_line(dep) -> str:
    ep = getattr(dep, "expert_parallel", 1)
    layout = f" (expert parallel {ep}, data-parallel attention {dep.data_parallel})" if ep > 1 else ""
    if dep.pipeline_parallel > 1:  # every stage's devices are in the replica (and its price)
        layout += f" (tensor parallel {dep.tensor_parallel} x pipeline parallel {dep.pipeline_parallel})"
    return (f"{dep.model.key} ({dep.weight_format}) on {dep.num_devices} x {dep.device.key}"
            f"{layout}: "
            f"{dep.weight_bytes / 1e9:.1f} GB of weights, {dep.num_kv_blocks} KV blocks of {dep.block_size} tokens "
            f"({dep.num_kv_blocks * dep.block_size:,} tokens) per replica, ${dep.price_usd_per_hour:.2f}/hour per replica")


def cmd_calibrate(args) -> int:
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


def cmd_validate(args) -> int:
    from simcost.analysis.validate import format_report, validate, validation_scenario, write_outputs
    from simcost.workload.serving_log import LogColumns, load_log, send_note, unit_note

    log = load_log(args.log, LogColumns.parse(args.columns) if args.columns else None)
    if (note := send_note(log)) is not None:  # a replay of how the client sent, not of its instants
        print(note, file=sys.stderr)
    if (note := unit_note(log)) is not None:
        print(note, file=sys.stderr)
    scenario = validation_scenario(args.scenario, args.log, args.overrides, args.seed, args.catalog)
    out = out_dir(args.out or Path("results") / f"validate-{scenario.name}")
    report, measured, simulated = validate(scenario, log)
    print(format_report(report))  # before writing: a full disk must not lose the answer
    print(f"\nwrote {', '.join(str(p) for p in write_outputs(report, measured, simulated, out))}")
    return 0


def cmd_catalog(args) -> int:
    from simcost.catalog.listing import format_catalog

    if args.table == "import-model":
        return cmd_import_model(args)
    if args.config_json is not None or args.key is not None:
        raise InputError("catalog", "a config.json and --key are for import-model")
    print(format_catalog(args.table, catalog=with_catalog_files(args.catalog), wide=args.wide))
    return 0


def with_catalog_files(files: list[str]):
    """The bundled catalog plus `--catalog` files' entries, or None for the bundled one alone."""
    from simcost.catalog.catalog import UserCatalog, read_catalog_file

    parts = [part for name in files for part in read_catalog_file(Path(name), f"--catalog {name}")]
    return UserCatalog.from_parts(parts).catalog if parts else None


def cmd_import_model(args) -> int:
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


def cmd_trace_inspect(args) -> int:
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


def cmd_size(args) -> int:
    from simcost.analysis.sizing import size
    from simcost.analysis.sizing_outputs import format_sizing, parse_options, sizing_json, write_sizing
    from simcost.scenario.scenario import load_scenario

    options = parse_options(args.devices, args.tensor_parallel, args.policies, args.pricing)
    scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
    out = out_dir(args.out or Path("results") / f"size-{scenario.name}")
    result = size(scenario, options, args.max_replicas, args.seeds, args.jobs, pool=args.pool, progress=not args.quiet)
    paths = write_sizing(result, scenario, out)
    print_result(format_sizing(result), sizing_json(result), paths, args.json)
    return 0


def print_result(text: str, data: dict, paths: dict[str, Path], as_json: bool) -> None:
    """The table and the files written, or with --json the result alone on stdout (files named on stderr)."""
    import json

    written = f"wrote {', '.join(map(str, paths.values()))}"
    if as_json:
        print(json.dumps(data, indent=2))
        print(written, file=sys.stderr)
    else:
        print(text)
        print(f"\n{written}")


def cmd_commitments(args) -> int:
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
    out = out_dir(args.out or Path("results") / f"commitments-{scenario.name}")
    result = Simulation(scenario).run(progress=not (args.no_progress or args.quiet))
    plan = plan_from_run(result, args.reserved_usd_per_device_hour, args.discount, args.basis, args.period_s,
                         week=not args.no_week)
    paths = write_commitments(plan, scenario.name, out)
    print_result(format_plan(plan), plan_json(plan, scenario.name), paths, args.json)
    return 0



def cmd_levers(args) -> int:
    from simcost.analysis.levers import study
    from simcost.analysis.levers_config import load_levers
    from simcost.analysis.levers_outputs import format_study, write_outputs
    from simcost.results.folder import staged_folder
    from simcost.scenario.scenario import load_scenario

    overrides = {"smaller_model": {"model": args.smaller_model}} if args.smaller_model else None
    cfg = load_levers(args.levers, overrides)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip()) if args.only else None
    scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
    out = out_dir(args.out or Path("results") / f"levers-{scenario.name}")
    result = study(scenario, cfg, only, not args.fixed_fleet, args.max_replicas, args.seeds, args.jobs,
                   progress=not args.quiet)
    with staged_folder(out, ()) as tmp:  # whole or not at all, like a run folder
        paths = [out / path.name for path in write_outputs(result, tmp)]
    print(format_study(result))
    print(f"\nwrote {', '.join(map(str, paths))}")
    return 0


def cmd_breakeven(args) -> int:
    from simcost.analysis.breakeven import BREAKEVEN_FILES, breakeven, format_breakeven, write_outputs
    from simcost.results.folder import check_targets, staged_folder
    from simcost.scenario.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.overrides, args.seed, args.catalog)
    out = out_dir(args.out or Path("results") / f"breakeven-{scenario.name}")
    check_targets(out, BREAKEVEN_FILES)
    result = breakeven(scenario, args.api, args.min_replicas, args.redundancy, args.seeds, args.jobs)
    with staged_folder(out, BREAKEVEN_FILES) as tmp:  # whole or not at all, like a run folder
        paths = [out / path.name for path in write_outputs(result, tmp)]
    print(format_breakeven(result))
    print(f"\nwrote {', '.join(map(str, paths))}")
    return 0


def cmd_report(args) -> int:
    from simcost.analysis.report_plans import write_any_report

    print(f"wrote {write_any_report(args.results_dir, args.out)}")
    return 0
