"""`simcost size` beyond the search: its options from the command's text, its result as the
terminal's table (`format_sizing`), as JSON (`--json`, result.json) and as the results folder:
result.json, options.csv, sizing.png, and the chosen deployment as `vllm-serve.sh` and
`kubernetes.yaml` (simcost.analysis.deploy)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import yaml

from simcost.analysis.deploy import kubernetes_manifests, vllm_args, vllm_command
from simcost.analysis.forecast import with_replicas
from simcost.analysis.sizing import Sizing, candidate_options, with_option
from simcost.errors import InputError
from simcost.results.folder import check_targets, staged_folder
from simcost.scenario.scenario import Scenario, scenario_from_dict
from simcost.scenario.schema import to_dict
from simcost.units import HOURS_PER_MONTH

SIZE_FILES = ("result.json", "options.csv", "sizing.png", "vllm-serve.sh", "kubernetes.yaml")
OPTION_COLUMNS = ("rank", "option", "replicas", "usd_per_hour", "usd_per_month", "slo_attainment", "feasible", "reason",
                  "hardware.device", "hardware.tensor_parallel", "engine.policy", "fleet.pricing", "tried")


def _items(value) -> list:
    """A comma-separated text (the CLI's) or a list; [None] (keep the scenario's) when empty."""
    if value is None:
        return [None]
    items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value)
    return items or [None]


def parse_options(devices, tensor_parallel=None, policies=None, pricing=None) -> list[dict]:
    """The options of `simcost size --devices --tensor-parallel --policies --pricing`, from the
    flags' texts or Python lists; a pricing entry is a model name or a fleet.pricing mapping
    (as YAML text or a dict)."""
    degrees = []
    for item in _items(tensor_parallel):
        whole = isinstance(item, int) and not isinstance(item, bool) or str(item).isdigit()
        if item is not None and not (whole and int(item) >= 1):
            raise InputError("--tensor-parallel", f"'{item}'; expected whole numbers >= 1, e.g. 1,2")
        degrees.append(None if item is None else int(item))
    prices = []
    for entry in pricing or [None]:
        value = yaml.safe_load(entry) if isinstance(entry, str) else entry
        value = {"model": value} if isinstance(value, str) else value  # 'on_demand' alone is a model name
        if value is not None and not isinstance(value, dict):
            raise InputError("--pricing", f"'{entry}'; expected a model name or a mapping such as '{{model: spot, ...}}'")
        prices.append(value)
    return candidate_options(_items(devices), degrees, _items(policies), prices)


def option_rows(result: Sizing) -> list[dict]:
    """One row per option, ranked (the chosen first; infeasible ones last, unranked)."""
    rows = []
    for index, o in enumerate(result.options, start=1):
        feasible = o.replicas is not None
        rows.append({"rank": index if feasible else None, "option": o.label, "replicas": o.replicas,
                     "usd_per_hour": o.usd_per_hour, "usd_per_month": o.usd_per_month,
                     "slo_attainment": o.slo_attainment, "feasible": feasible, "reason": o.reason,
                     **{k: o.option.get(k) for k in OPTION_COLUMNS[8:12]},
                     "tried": " ".join(f"{n}{'+' if met else '-'}" for n, met in o.tried)})
    return rows


def sizing_json(result: Sizing) -> dict:
    """Everything the sizing found, as plain data (what --json prints and result.json holds)."""
    chosen = result.chosen
    return {"command": "size", "scenario": result.scenario, "seeds": result.seeds, "max_replicas": result.max_replicas,
            "slo_target": result.slo_target, "pool": result.pool, "hours_per_month": HOURS_PER_MONTH,
            "chosen": None if chosen is None else {"option": chosen.option, "label": chosen.label,
                                                   "replicas": chosen.replicas, "usd_per_hour": chosen.usd_per_hour,
                                                   "usd_per_month": chosen.usd_per_month,
                                                   "slo_attainment": chosen.slo_attainment},
            "options": option_rows(result),
            "headroom": None if result.headroom is None else asdict(result.headroom),
            "redundancy": [asdict(r) for r in result.redundancy],
            "simulations": result.simulations, "total_simulations": result.total_simulations}


def chosen_scenario(result: Sizing, base: Scenario) -> Scenario | None:
    """The scenario with the chosen option and replica count applied (None: nothing met the SLO)."""
    chosen = result.chosen
    if chosen is None or chosen.replicas is None:
        return None
    pool = None if result.pool is None else [p.name for p in base.fleet.pools or ()].index(result.pool)
    return scenario_from_dict(with_replicas(with_option(to_dict(base), chosen.option, pool), chosen.replicas, pool))


def deployment_files(result: Sizing, base: Scenario) -> dict[str, str]:
    """{file name: text} of the chosen deployment's vLLM command and Kubernetes manifest; empty
    when nothing was chosen or the fleet is not one vLLM deployment (pools, request-level batching)."""
    scenario = chosen_scenario(result, base)
    if scenario is None or result.pool is not None or scenario.engine.policy not in ("prefill_first", "chunked"):
        return {}
    chosen = result.chosen
    assert chosen is not None and chosen.replicas is not None  # chosen_scenario returned one
    head = f"# simcost size {base.name}: {chosen.replicas} x {chosen.label}, ${chosen.usd_per_hour:,.2f}/hour\n"
    manifest = ("# The chosen fleet as a Deployment (one pod per replica) and an HPA. Assumptions: the image, and the HPA\n"
                "# metric: a vLLM gauge a metrics adapter exposes as the Pods metric named below (see its simcost/metric note).\n")
    return {"vllm-serve.sh": "#!/bin/sh\n" + head + "# one replica; run one per replica behind a load balancer\n"
                             + vllm_command(scenario),
            "kubernetes.yaml": head + manifest + yaml.safe_dump_all(kubernetes_manifests(scenario, chosen.replicas),
                                                                    sort_keys=False)}


def write_sizing(result: Sizing, base: Scenario, out_dir: Path) -> dict[str, Path]:
    """The results folder, whole or not at all; {name: path}."""
    check_targets(out_dir, SIZE_FILES)
    files, scenario = deployment_files(result, base), chosen_scenario(result, base)
    data = sizing_json(result)
    if files and scenario is not None:
        data["vllm_args"] = vllm_args(scenario)
    with staged_folder(out_dir, SIZE_FILES) as tmp:
        (tmp / "result.json").write_text(json.dumps(data, indent=2) + "\n")
        with (tmp / "options.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=OPTION_COLUMNS)
            writer.writeheader()
            writer.writerows({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()}
                             for row in option_rows(result))
        plot_sizing(result, tmp / "sizing.png")
        for name, text in files.items():
            (tmp / name).write_text(text)
    return {name.split(".")[0]: out_dir / name for name in SIZE_FILES if name in {"result.json", "options.csv",
                                                                                   "sizing.png", *files}}


def plot_sizing(result: Sizing, path: Path) -> Path:
    """$/month of each feasible option (the chosen one highlighted), with its replica count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feasible = [o for o in result.options if o.usd_per_month is not None]
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(feasible), 2) + 1.5))
    labels = [f"{o.replicas} x {o.label}" for o in feasible]
    values = [o.usd_per_month or 0.0 for o in feasible]
    ax.barh(range(len(feasible)), values, color=["tab:green" if i == 0 else "tab:gray" for i in range(len(feasible))])
    ax.set_yticks(range(len(feasible)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"$ per month ({HOURS_PER_MONTH:g} h)")
    ax.grid(axis="x", alpha=0.3)
    infeasible = len(result.options) - len(feasible)
    ax.set_title(f"{result.scenario}: cheapest fleets meeting the SLO (green: chosen)"
                 + (f"; {infeasible} option(s) infeasible" if infeasible else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_sizing(result: Sizing) -> str:
    """The ranked options as a table, then the chosen fleet's headroom and redundancy."""
    where = f" of pool {result.pool} (the other pools as written)" if result.pool else ""
    lines = [f"{result.scenario}: cheapest fleet meeting the SLO (target {result.slo_target:.0%}) "
             f"on {result.seeds} seed(s), replicas 1..{result.max_replicas}{where}", ""]
    width = max([len(o.label) for o in result.options] + [6])
    lines.append(f"{'rank':>4}  {'option':<{width}}  {'replicas':>8}  {'$/hour':>9}  {'$/month':>10}  {'SLO att.':>8}  note")
    for index, o in enumerate(result.options, start=1):
        att = "-" if o.slo_attainment is None else f"{o.slo_attainment:.1%}"
        if o.replicas is None or o.usd_per_hour is None:  # infeasible: both unset
            lines.append(f"{'-':>4}  {o.label:<{width}}  {'-':>8}  {'-':>9}  {'-':>10}  {att:>8}  {o.reason}")
        else:
            note = _cost_note(index, o.usd_per_hour, result.options[0].usd_per_hour)
            lines.append(f"{index:>4}  {o.label:<{width}}  {o.replicas:>8}  {o.usd_per_hour:>9,.2f}  "
                         f"{o.usd_per_month:>10,.0f}  {att:>8}  {note}")
    lines.append("")
    lines += _chosen_lines(result)
    lines.append(f"simulations: {result.simulations} for the replica search "
                 f"({result.total_simulations} with headroom and redundancy)")
    return "\n".join(lines)


def _cost_note(rank: int, usd_per_hour: float, first_usd_per_hour: float | None) -> str:
    """The first option is the chosen one; the others cost this much more (ranked by cost, so
    the first is feasible whenever a later one is)."""
    if rank == 1 or first_usd_per_hour is None:
        return "chosen"
    return f"+${usd_per_hour - first_usd_per_hour:,.2f}/hour"


def _chosen_lines(result: Sizing) -> list[str]:
    chosen = result.chosen
    if chosen is None or chosen.usd_per_hour is None:  # a chosen option has both
        return ["no option meets the SLO within the replica bound"]
    lines = [f"chosen: {chosen.replicas} x {chosen.label}, ${chosen.usd_per_hour:,.2f}/hour "
             f"(${chosen.usd_per_month:,.0f}/month at {HOURS_PER_MONTH:g} h)"]
    if result.headroom is not None:
        h = result.headroom
        verdict = {True: "misses it", False: "still meets it", None: "not run"}[h.check_fails]
        lines.append(f"headroom: meets the SLO up to x{h.multiplier:.3g} the load "
                     f"(x{h.check_multiplier:.3g}: {verdict})" + (f"; {h.note}" if h.note else ""))
    for r in result.redundancy:
        lines.append(f"N+{r.extra} ({r.replicas} replicas): ${r.usd_per_hour:,.2f}/hour, "
                     f"${r.usd_per_hour * HOURS_PER_MONTH:,.0f}/month (+${r.usd_per_hour - chosen.usd_per_hour:,.2f}/hour)")
    return lines
