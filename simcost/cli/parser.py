"""The `simcost` command line: every subcommand, its flags and help, and the bounds on flags that
multiply work. Each subcommand runs a function of `simcost.cli.commands`."""

from __future__ import annotations

import argparse
import os
import re
import sys
import typing
from pathlib import Path

from simcost.cli import commands
from simcost.units import S_PER_HOUR

# flags that multiply work: a typo of three extra zeros must be refused, not run for days
MAX_SEEDS = 1000
MAX_JOBS = 1024


def one_line(text: str) -> str:
    """Control characters from the input (a newline in a key, a CR in a trace cell) escaped, so
    the error stays one line."""
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]", lambda m: repr(m.group())[1:-1], text)



class Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, like every other input error (its default
    prints the whole usage first)."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"simcost: error: {self.prog}: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


class VersionAction(argparse.Action):
    """--version: prints `simcost <version>` and exits, looking the version up only then (the
    installed distribution's metadata costs ~20-40 ms of every command's start otherwise)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):  # noqa: A002
        super().__init__(option_strings, dest, default=default, nargs=0,
                         help=help or "show the program's version number and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"simcost {version()}")  # (to stdout, as argparse's own version action)
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="simcost", description="Simulate LLM serving latency and cost.")
    p.add_argument("--version", action=VersionAction)
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
    run_p.set_defaults(func=commands.cmd_run)

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
    sweep_p.set_defaults(func=commands.cmd_sweep)

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
    fc_p.set_defaults(func=commands.cmd_forecast)

    check_p = sub.add_parser("check", help="validate a scenario (names, sizes, memory fit) without running it")
    common(check_p)
    check_p.set_defaults(func=commands.cmd_check)

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
    cal_p.set_defaults(func=commands.cmd_calibrate)

    val_p = sub.add_parser("validate", help="replay a real serving log on a scenario's deployment; simulated vs measured")
    common(val_p)
    val_p.add_argument("log", type=Path, help="per-request log: vllm bench serve --save-detailed JSON, JSONL of vLLM "
                                               "request stats, or a CSV/JSONL read through --columns")
    val_p.add_argument("--columns", default=None, metavar="MAP",
                       help="column mapping, e.g. arrival_s=ts,prompt_tokens=in,output_tokens=out,ttft_s=ttft,e2e_s=lat"
                            "[,time_unit=ms] (or first_token_s=...,last_token_s=... instead of ttft_s, e2e_s)")
    val_p.add_argument("--out", type=Path, default=None, help="results folder (default results/validate-<scenario name>)")
    val_p.set_defaults(func=commands.cmd_validate)

    cat_p = sub.add_parser("catalog", help="list the device, model or price catalog, or import a model")
    cat_p.add_argument("table", nargs="?", choices=("devices", "models", "prices", "import-model"), default="devices",
                       help="which catalog (default devices); import-model CONFIG_JSON prints the models.yaml "
                            "entry of a Hugging Face config.json")
    cat_p.add_argument("config_json", nargs="?", type=Path, default=None, help="import-model: a local config.json")
    cat_p.add_argument("--key", default=None, help="import-model: the catalog key (default from the config's name)")
    cat_p.add_argument("--catalog", action="append", default=[], metavar="FILE",
                       help="list the bundled catalog with this catalog file's entries (repeatable)")
    cat_p.add_argument("--wide", action="store_true", help="devices: every column (default: the ones that fit 120 columns)")
    cat_p.set_defaults(func=commands.cmd_catalog)

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
    insp_p.set_defaults(func=commands.cmd_trace_inspect)

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
    size_p.set_defaults(func=commands.cmd_size)

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
    cm_p.set_defaults(func=commands.cmd_commitments)

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
    lev_p.set_defaults(func=commands.cmd_levers)

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
    be_p.set_defaults(func=commands.cmd_breakeven)

    rep_p = sub.add_parser("report", help="one self-contained HTML page of a results folder")
    rep_p.add_argument("results_dir", type=Path,
                       help="a folder written by simcost run, sweep, size, commitments, levers or forecast")
    rep_p.add_argument("--out", type=Path, default=None, help="HTML file to write (default RESULTS_DIR/report.html)")
    rep_p.set_defaults(func=commands.cmd_report)
    return p


def version() -> str:
    """The installed distribution's version; a source tree that is not installed has only the package's."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("simcost")
    except PackageNotFoundError:
        import simcost

        return simcost.__version__

