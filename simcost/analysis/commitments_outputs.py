"""`simcost commitments` beyond the terminal: the plan as JSON (`--json`, result.json) and the
results folder: result.json, commitments.csv (the hourly demand and what each plan pays per
hour) and commitments.png (the demand curve with the reserved devices and the savings-plan
commitment drawn on it)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from simcost.analysis.commitments import CommitmentPlan
from simcost.results.folder import check_targets, staged_folder

COMMITMENT_FILES = ("result.json", "commitments.csv", "commitments.png")


def plan_json(plan: CommitmentPlan, scenario: str) -> dict:
    """Both plans and the cheapest, as plain data."""
    def plain(obj) -> dict:
        data = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(obj).items()}
        return data | {"saving_usd": obj.saving_usd, "saving_fraction": obj.saving_fraction,
                       "break_even_utilization": obj.break_even_utilization}

    rp, sp, d = plan.reserved, plan.savings_plan, plan.demand
    return {"command": "commitments", "scenario": scenario, "basis": plan.basis, "period_s": plan.period_s,
            "simulated_hours": plan.simulated_hours, "hours": len(d),
            "demand_devices": {"min": float(d.min()), "mean": float(d.mean()), "max": float(d.max())},
            "on_demand_cost_usd": rp.on_demand_cost_usd, "best": plan.best,
            "reserved": plain(rp) | {"mean_utilization": rp.mean_utilization},
            "savings_plan": plain(sp) | {"covered_devices": sp.covered_devices},
            "assumptions": list(plan.assumptions)}


def hourly_rows(plan: CommitmentPlan) -> list[dict]:
    """Per hour: devices demanded, and the $ of on demand, reserved (R devices + overflow on
    demand) and savings plan (commitment + usage above it at on-demand rates)."""
    rp, sp = plan.reserved, plan.savings_plan
    od = rp.on_demand_usd_per_device_hour
    rows = []
    for hour, devices in enumerate(plan.demand.tolist()):
        usage = devices * od
        rows.append({"hour": hour, "devices": devices, "on_demand_usd": usage,
                     "reserved_usd": rp.devices * rp.reserved_usd_per_device_hour + max(0.0, devices - rp.devices) * od,
                     "savings_plan_usd": sp.commitment_usd_per_hour
                     + max(0.0, usage - sp.commitment_usd_per_hour / (1.0 - sp.discount))})
    return rows


def write_commitments(plan: CommitmentPlan, scenario: str, out_dir: Path) -> dict[str, Path]:
    """The results folder, whole or not at all; {file name: path} (commitments.csv and .png share a stem)."""
    check_targets(out_dir, COMMITMENT_FILES)
    with staged_folder(out_dir, COMMITMENT_FILES) as tmp:
        (tmp / "result.json").write_text(json.dumps(plan_json(plan, scenario), indent=2) + "\n")
        rows = hourly_rows(plan)
        with (tmp / "commitments.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot_commitments(plan, scenario, tmp / "commitments.png")
    return {name: out_dir / name for name in COMMITMENT_FILES}


def plot_commitments(plan: CommitmentPlan, scenario: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rp, sp = plan.reserved, plan.savings_plan
    hours = np.arange(len(plan.demand))
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.step(hours, plan.demand, where="post", color="tab:blue", label=f"demand ({plan.basis}, devices)")
    ax.axhline(rp.devices, color="tab:green", linestyle="--", label=f"reserved: {rp.devices} devices")
    ax.axhline(sp.covered_devices, color="tab:orange", linestyle=":",
               label=f"savings plan: ${sp.commitment_usd_per_hour:,.2f}/h covers {sp.covered_devices:.2f} devices")
    ax.set_xlabel("hour" + (" (days: every 24 h)" if len(hours) > 48 else ""))
    if len(hours) > 48:
        ax.set_xticks(np.arange(0, len(hours) + 1, 24))
    ax.set_ylabel("devices")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{scenario}: commitment plans; cheapest {plan.best.replace('_', ' ')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
