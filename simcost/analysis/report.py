"""`simcost report RESULTS_DIR`: one self-contained HTML page from a results folder.

A run folder (summary.json, from `simcost run`) gives: the scenario, the headline latency and
throughput table, latency CDFs (requests.csv), the fleet over time (timeseries.csv), the cost by
category, pool, workload and tenant, and the unit economics. A sweep folder (sweep.json, from
`simcost sweep`) gives: the sweep table, the latency-versus-spend frontier (`simcost.analysis.frontier`)
and each point's cost. When a folder holds both files it is read as a sweep.

The page has no external references at all: figures are base64 PNGs drawn here with matplotlib,
the style is inline, there is no script, and a Content-Security-Policy forbids the browser any
load but data: images, so it opens from a file, attached to a planning document, with no server
or network. A section whose data the folder lacks is left out; a file that is there but
unreadable is an InputError naming it. Every string from a file is HTML-escaped.
"""

from __future__ import annotations

from pathlib import Path

from simcost.analysis.report_run import run_page
from simcost.analysis.report_sweep import sweep_page
from simcost.errors import InputError
from simcost.files import staged_file

# --- entry points ------------------------------------------------------------------------------

def write_report(results_dir: Path, out: Path | None = None) -> Path:
    """Render RESULTS_DIR (a run or a sweep folder) to one HTML file; default RESULTS_DIR/report.html."""
    results_dir = Path(results_dir)
    return write_page(render(results_dir), results_dir, out)


def write_page(html: str, results_dir: Path, out: Path | None = None) -> Path:
    """The page to `out`, default RESULTS_DIR/report.html."""
    out = Path(out) if out is not None else results_dir / "report.html"
    with staged_file(out, "--out") as tmp:
        tmp.write_text(html, encoding="utf-8")
    return out


def render(results_dir: Path) -> str:
    if not results_dir.is_dir():
        raise InputError(str(results_dir), "no such folder; expected a results folder from simcost run or simcost sweep")
    kind = "sweep.json" if (results_dir / "sweep.json").is_file() else "summary.json"
    if (results_dir / kind).is_file():
        try:
            return sweep_page(results_dir) if kind == "sweep.json" else run_page(results_dir)
        except (KeyError, TypeError, ValueError) as exc:  # InputError is a ValueError: pass it on as it is
            if isinstance(exc, InputError):
                raise
            raise InputError(str(results_dir / kind), f"unexpected content ({type(exc).__name__}: {exc}); "
                                                      "was the folder written by this version of simcost?") from None
    raise InputError(str(results_dir), "holds neither summary.json (a run folder, from simcost run) nor sweep.json "
                                       "(a sweep folder, from simcost sweep) nor result.json (from simcost size, "
                                       "commitments, levers or forecast)")
