"""`simcost report` for the planning commands' folders: size, commitments, levers and forecast
each write result.json (with a "command" key), a CSV and a figure; this renders them as one
self-contained page in the style of the run and sweep reports (simcost.analysis.report, whose
page parts it reuses). Run and sweep folders go to simcost.analysis.report as before."""

from __future__ import annotations

from html import escape
from pathlib import Path

from simcost.analysis.report import write_page, write_report
from simcost.analysis.report_html import figure, fmt, key_values, page, section, table, usd
from simcost.analysis.report_read import read_json
from simcost.errors import InputError

COMMANDS = ("size", "commitments", "levers", "forecast")


def write_any_report(results_dir: Path, out: Path | None = None) -> Path:
    """The report of any simcost results folder: a planning command's (result.json) here, a run's
    or a sweep's by simcost.analysis.report."""
    results_dir = Path(results_dir)
    if not (results_dir / "result.json").is_file():
        return write_report(results_dir, out)
    return write_page(render_plan(results_dir), results_dir, out)


def render_plan(folder: Path) -> str:
    path = folder / "result.json"
    data = read_json(path)
    command = data.get("command") if isinstance(data, dict) else None
    if command not in COMMANDS:
        raise InputError(str(path), f"'command' is {command!r}; expected one of {', '.join(COMMANDS)}")
    try:
        return {"size": _size_page, "commitments": _commitments_page, "levers": _levers_page,
                "forecast": _forecast_page}[command](folder, data)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(str(path), f"unexpected content ({type(exc).__name__}: {exc}); "
                                    "was the folder written by this version of simcost?") from None


def _png(folder: Path, name: str, alt: str) -> str:
    path = folder / name
    return figure(path.read_bytes(), alt) if path.is_file() else ""


def _pre(folder: Path, name: str) -> str:
    path = folder / name
    return f"<pre>{escape(path.read_text())}</pre>" if path.is_file() else ""


def _size_page(folder: Path, d: dict) -> str:
    c = d["chosen"]
    head = [("scenario", d["scenario"]), ("SLO target", fmt(d["slo_target"], "pct")), ("seeds", str(d["seeds"])),
            ("replicas tried", f"1..{d['max_replicas']}"), ("pool sized", d["pool"] or ""),
            ("chosen", "none meets the SLO" if c is None else f"{c['replicas']} x {c['label']}"),
            ("$/hour", usd(c and c["usd_per_hour"], 2)), ("$/month", usd(c and c["usd_per_month"], 0)),
            ("simulations", f"{d['simulations']} for the search, {d['total_simulations']} in all")]
    room = d.get("headroom")
    if room:
        head.append(("headroom", f"meets the SLO up to x{room['multiplier']:.3g} the load" +
                     (f" ({room['note']})" if room.get("note") else "")))
    head += [(f"N+{r['extra']}", f"{r['replicas']} replicas, {usd(r['usd_per_hour'], 2)}/hour") for r in d["redundancy"]]
    rows = [[o["rank"] or "-", o["option"], o["replicas"] or "-", usd(o["usd_per_hour"], 2), usd(o["usd_per_month"], 0),
             fmt(o["slo_attainment"], "pct"), o["tried"], o["reason"] or ""] for o in d["options"]]
    options = table(["rank", "option", "replicas", "$/hour", "$/month", "SLO attainment", "tried (+ met)", "why not"],
                    rows, numeric_from=2, caption="Cheapest first; infeasible options last.")
    deploy = [p for p in (_pre(folder, "vllm-serve.sh"), _pre(folder, "kubernetes.yaml")) if p]
    sections = [section("chosen", "Chosen fleet", key_values(head)),
                section("options", "Options", options, _png(folder, "sizing.png", "$/month of each feasible option")),
                section("deploy", "Deployment", *deploy) if deploy else ""]
    return page(f"{d['scenario']}: sizing", "simcost size: the cheapest fleet meeting the SLO", sections)


def _commitments_page(folder: Path, d: dict) -> str:
    rp, sp = d["reserved"], d["savings_plan"]
    head = [("scenario", d["scenario"]), ("demand basis", d["basis"]),
            ("hours planned", f"{d['hours']} ({d['simulated_hours']} simulated)"),
            ("devices", ", ".join(f"{k} {v:.2f}" for k, v in d["demand_devices"].items())),
            ("cheapest", d["best"].replace("_", " "))]
    rows = [["on-demand", "-", usd(d["on_demand_cost_usd"], 2), usd(0.0, 2), "-", "-"],
            ["reserved", f"{rp['devices']} devices", usd(rp["cost_usd"], 2), usd(rp["saving_usd"], 2),
             fmt(rp["saving_fraction"], "pct"), fmt(rp["break_even_utilization"], "pct")],
            ["savings plan", f"${sp['commitment_usd_per_hour']:,.2f}/h", usd(sp["cost_usd"], 2), usd(sp["saving_usd"], 2),
             fmt(sp["saving_fraction"], "pct"), fmt(sp["break_even_utilization"], "pct")]]
    plans = table(["option", "commitment", "cost", "saving", "saving %", "break-even use"], rows, numeric_from=2)
    notes = "".join(f"<li>{escape(n)}</li>" for n in d["assumptions"])
    sections = [section("plan", "Commitment plans", key_values(head), plans,
                        _png(folder, "commitments.png", "demand and commitments per hour"),
                        f"<ul>{notes}</ul>" if notes else "")]
    return page(f"{d['scenario']}: commitments", "simcost commitments: reserved devices or a savings plan", sections)


def _levers_page(folder: Path, d: dict) -> str:
    rows = [[r.get("rank") or "-", r["label"], r["status"], r.get("replicas") or "-", usd(r.get("usd_per_month"), 0),
             usd(r.get("saving_usd_per_month"), 0), fmt(r.get("roi"), ".3g"), fmt(r.get("p99_ttft_s"), "ms"),
             fmt(r.get("meets_slo"), "bool") if r["status"] == "ok" else "-", r.get("reason") or r.get("note") or ""]
            for r in d["rows"]]
    levers = table(["rank", "lever", "status", "replicas", "$/month", "saving/month", "ROI", "p99 TTFT (ms)", "meets SLO",
                    "note"], rows, numeric_from=3, caption=f"ROI: {d['roi']}")
    head = [("scenario", d["scenario"]), ("fleet", "right-sized per lever" if d["mode"] == "resize" else "as written"),
            ("seeds", str(d["seeds"])), ("engineer week", usd(d["usd_per_engineer_week"], 0)),
            ("simulations", str(d["simulations"]))]
    sections = [section("levers", "Levers ranked by ROI", key_values(head), levers,
                        _png(folder, "levers.png", "saving, ROI and p99 TTFT per lever"))]
    return page(f"{d['scenario']}: levers", "simcost levers: each optimisation alone, ranked by ROI", sections)


def _forecast_page(folder: Path, d: dict) -> str:
    rows = [[m["month"], f"x{m['load_factor']:.3g}", m["fleet"], f"{m['offered_requests_per_s']:.3g}",
             usd(m["usd_per_month_mean"], 0), f"{usd(m['usd_per_month_low'], 0)}-{usd(m['usd_per_month_high'], 0)}",
             fmt(m["slo_attainment_min"], "pct"), fmt(m["meets_slo"], "bool"), fmt(m["over_budget"], "bool")]
            for m in d["months"]]
    months = table(["month", "load", "replicas", "req/s", "$/month", f"band ({d['band']})", "SLO attainment (min)",
                    "meets SLO", "over budget"], rows)
    head = [("scenario", d["scenario"]), ("seeds", str(d["seeds"])), ("hours per month", f"{d['hours_per_month']:g}"),
            ("budget", usd(d["budget_usd_per_month"], 0) if d["budget_usd_per_month"] else ""),
            ("fleet", "resized each month" if d["resize"] else "static"), ("simulations", str(d["runs"]))]
    sections = [section("forecast", "Monthly spend and SLO", key_values(head), months,
                        _png(folder, "forecast.png", "monthly spend with its band"))]
    return page(f"{d['scenario']}: forecast", "simcost forecast: spend and SLO under load growth", sections)
