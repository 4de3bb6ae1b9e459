"""Leave one GPU out: predict each measured GPU's kernel tables (simcost/data/kernels) from the
nearest OTHER GPU's tables scaled by the device-spec ratios (simcost.perf.kernel_scaling, the
method a GPU without tables uses: a row's roofline share by the roofline ratio, the rest by the
compute-peak ratio to a fitted exponent), and compare with its own measurements; the plain
roofline (catalog factors) on the same rows beside it.

    python experiments/validate_kernel_tables.py [--refit] [--launch-us 5]

--refit fits the per-operator scaling exponents (SCALING_EXPONENT) without each held-out GPU, on
every ordered pair of the other six (slow), so nothing is fitted on the GPU it predicts (the
utilisation ceiling, kernel_scaling.UTILISATION_CEILING, was chosen once on all seven).

Two tables, each cell median |error| / worst signed error (predicted / measured - 1):
1. per operator: every row the two GPUs' tables share (same shape), by family: GEMM at m <= 128
   tokens (decode-like) and above (prefill-like), prefill (context) and decode (generation)
   attention, all-reduce, fused MoE at <= 128 tokens and above; bf16 and fp8 rows together;
2. whole steps of the kernel-table model (GPU time: step overhead and eager floor off, the same
   in both) for Llama-3.1-8B TP1, Llama-3.1-70B TP4 and TP8 and Qwen3-30B-A3B TP1, bf16: decode
   of 1-256 sequences at 2,048 and 8,192 tokens of context, prefill of 1 x 512 to 4 x 2,048
   tokens; the reference is the same model on the GPU's own tables.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from simcost.perf.calibrate import Pair
from simcost.perf.kernel_scaling import (
    LAUNCH_S,
    TABLE_DEVICE,
    borrowed_tables,
    nearest_table,
    row_roofline_s,
    scaling_terms,
    table_device,
)
from simcost.perf.kernel_tables import FP8_RATIO_ASSUMED, load_tables
from simcost.perf.roofline import default_factors
from simcost.perf.step_model import kernel_step_params, step_time_s

OPERATOR_FAMILIES = ("gemm decode", "gemm prefill", "attention prefill", "attention decode", "allreduce",
                     "moe decode", "moe prefill")
STEP_MODELS = (("llama-3.1-8b", 1), ("llama-3.1-70b", 4), ("llama-3.1-70b", 8), ("qwen3-30b-a3b", 1))
# (prompt tokens, prompt requests, decode sequences, context per decode sequence)
STEPS = [(0, 0, b, c) for b in (1, 8, 32, 128, 256) for c in (2048, 8192)] + \
        [(n * r, r, 0, 0) for n, r in ((512, 1), (2048, 1), (8192, 1), (512, 8), (2048, 4))]


def family(op: str, rows: np.ndarray) -> np.ndarray:
    """Each row's family name (see OPERATOR_FAMILIES)."""
    if op in ("gemm", "moe"):
        return np.where(rows[:, 0] <= 128, f"{op} decode", f"{op} prefill")
    name = {"context_attention": "attention prefill", "generation_attention": "attention decode"}.get(op, op)
    return np.full(len(rows), name)


def shared_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the rows of a and b with the same shape columns (all but the last)."""
    index = {tuple(r[:-1]): i for i, r in enumerate(b)}
    pairs = [(i, index[tuple(r[:-1])]) for i, r in enumerate(a) if tuple(r[:-1]) in index]
    ia, ib = (np.array(x, dtype=int) for x in zip(*pairs)) if pairs else (np.zeros(0, int), np.zeros(0, int))
    return ia, ib


EXPONENT_GRID = np.round(np.arange(0.0, 1.51, 0.05), 2)


def pair_rows(source: str, target: str) -> dict[str, list[tuple[np.ndarray, ...]]]:
    """{operator: [(source ms, roofline ratio target / source, roofline share, ratio the rest
    scales by, target ms)]} (kernel_scaling.scaling_terms) over the rows the two GPUs' tables share."""
    out: dict[str, list] = {}
    src_tables, tgt_tables = load_tables(source), load_tables(target)
    for key, rows in tgt_tables.items():
        op, dtype = key.split("/")
        if key not in src_tables:
            continue
        it, js = shared_rows(rows, src_tables[key])
        if len(it) == 0:
            continue
        terms = scaling_terms(op, dtype, src_tables[key][js], table_device(source), table_device(target),
                              src_tables[key])
        if terms is None:
            continue
        out.setdefault(op, []).append((src_tables[key][js, -1], *terms, rows[it, -1]))
    return out


def fit_exponents(exclude: str | None = None, launch_s: float = LAUNCH_S) -> dict[str, float]:
    """Per operator, the exponent e (kernel_scaling module docstring) that minimises the mean over ordered GPU
    pairs (neither of them `exclude`) of the median |log(predicted / measured)|."""
    names = [n for n in TABLE_DEVICE if n != exclude]
    per_op: dict[str, list] = {}
    for a in names:
        for b in names:
            if a != b:
                for op, items in _pair_rows_cached(a, b).items():
                    per_op.setdefault(op, []).append(items)
    launch_ms = launch_s * 1e3
    out = {}
    for op, pairs in per_op.items():
        def loss(alpha: float) -> float:
            meds = []
            for items in pairs:
                t_s, ratio, share, base, t_t = (np.concatenate([i[j] for i in items]) for j in range(5))
                pred = launch_ms + np.maximum(t_s - launch_ms, 0.0) * ratio ** share * base ** (alpha * (1 - share))
                meds.append(np.median(np.abs(np.log(pred / t_t))))
            return float(np.mean(meds))
        out[op] = float(min(EXPONENT_GRID, key=loss))
    return out


_PAIRS: dict[tuple[str, str], dict] = {}


def _pair_rows_cached(a: str, b: str) -> dict:
    if (a, b) not in _PAIRS:
        _PAIRS[(a, b)] = pair_rows(a, b)
    return _PAIRS[(a, b)]


def roofline_ms(op: str, dtype: str, rows: np.ndarray, target: str) -> np.ndarray | None:
    """The plain roofline with the catalog's factors (fp8: the assumed fp8/bf16 ratio) in ms."""
    device = table_device(target)
    mfu, mbu = device.mfu, device.mbu
    if dtype == "fp8" and op in ("gemm", "moe"):
        mfu, mbu = mfu * FP8_RATIO_ASSUMED[0], mbu * FP8_RATIO_ASSUMED[1]
    s = row_roofline_s(op, dtype, rows, device, mfu, mbu, hops=True)
    return None if s is None else s * 1e3


def operator_errors(target: str, source: str, launch_s: float, exponents=None) -> dict[str, dict[str, np.ndarray]]:
    """{model name: {family: signed errors}} for `target` predicted from `source`."""
    own = load_tables(target)
    scaled = borrowed_tables(source, table_device(target), launch_s, exclude=target, exponents=exponents).arrays
    out: dict[str, dict[str, list]] = {"scaled": {}, "roofline": {}}
    for key, rows in own.items():
        op, dtype = key.split("/")
        if key not in scaled:
            continue
        it, js = shared_rows(rows, scaled[key])
        if len(it) == 0:
            continue
        fam = family(op, rows[it])
        measured = rows[it, -1]
        predictions = {"scaled": scaled[key][js, -1], "roofline": roofline_ms(op, dtype, rows[it], target)}
        for name, pred in predictions.items():
            if pred is None:
                continue
            for f in np.unique(fam):
                out[name].setdefault(str(f), []).append(pred[fam == f] / measured[fam == f] - 1.0)
    return {name: {f: np.concatenate(v) for f, v in fams.items()} for name, fams in out.items()}


def step_errors(target: str, source: str, launch_s: float, exponents=None) -> dict[str, dict[str, np.ndarray]]:
    """{model name: {"<model> TP<t> prefill|decode": signed errors}} of whole kernel-model steps."""
    device = table_device(target)
    scaled = borrowed_tables(source, device, launch_s, exclude=target, exponents=exponents)
    out: dict[str, dict[str, list]] = {"scaled": {}, "roofline": {}}
    for model_key, tp in STEP_MODELS:
        pair = Pair.of(device.key, model_key, "bf16")
        factors = {**default_factors(device), "step_overhead_s": 0.0}
        roof = pair.params(tp, factors)
        kw = dict(step_overhead_s=0.0, cuda_graphs=True, eager_s_per_layer=0.0)
        ref = kernel_step_params(roof, device, pair.model, tp, "bf16", "bf16", "bf16", factors, **kw)
        pred = kernel_step_params(roof, device, pair.model, tp, "bf16", "bf16", "bf16", factors, tables=scaled, **kw)
        for prompt, r, d, c in STEPS:
            pairs = prompt * (prompt / max(r, 1) + 1) / 2.0 + d * (c + 1)
            times = [step_time_s(p, prompt, d, pairs, float(d * c), r) for p in (ref, pred, roof)]
            kind = "decode" if d else "prefill"
            fam = f"{model_key} TP{tp} {kind}"
            out["scaled"].setdefault(fam, []).append(times[1] / times[0] - 1.0)
            out["roofline"].setdefault(fam, []).append(times[2] / times[0] - 1.0)
        if tp > 1 and tp not in load_tables(target)["allreduce/vllm_graph"][:, 0]:
            # the GPU's own all-reduce table lacks this GPU count (GB200: 2 and 4): no reference
            for kind in ("prefill", "decode"):
                for name in out:
                    out[name].pop(f"{model_key} TP{tp} {kind}", None)
    return {name: {f: np.array(v) for f, v in fams.items()} for name, fams in out.items()}


def cell(errors: np.ndarray | None) -> str:
    if errors is None or len(errors) == 0:
        return "-"
    worst = errors[np.argmax(np.abs(errors))]
    return f"{np.median(np.abs(errors)) * 100:.1f} / {worst * 100:+.0f}"


def summary(errors_by_target: dict[str, dict[str, dict[str, np.ndarray]]], families) -> dict[str, dict[str, float]]:
    """Over all targets, per model and family: the median of the per-target medians and the worst."""
    out: dict[str, dict[str, float]] = {}
    for name in ("scaled", "roofline"):
        meds, worst = [], []
        for fams in errors_by_target.values():
            for f in families:
                e = fams[name].get(f)
                if e is not None and len(e):
                    meds.append(np.median(np.abs(e)))
                    worst.append(np.max(np.abs(e)))
        out[name] = {"median_of_medians_pct": float(np.median(meds) * 100), "worst_abs_pct": float(np.max(worst) * 100),
                     "families": len(meds), "families_within_5pct_median": int(np.sum(np.array(meds) <= 0.05))}
    return out


def print_table(title: str, errors_by_target: dict, families, sources: dict[str, str]) -> None:
    print(f"\n== {title} (median |error| % / worst signed error %; scaled from the source | plain roofline) ==")
    print("| GPU held out | from | " + " | ".join(families) + " |")
    print("|---|---|" + "---|" * len(families))
    for target, fams in errors_by_target.items():
        cells = [f"{cell(fams['scaled'].get(f))} \\| {cell(fams['roofline'].get(f))}" for f in families]
        print(f"| {TABLE_DEVICE[target]} | {TABLE_DEVICE[sources[target]]} | " + " | ".join(cells) + " |")


def run(launch_us: float = 5.0, refit: bool = False) -> dict:
    """Every measured GPU held out in turn, borrowing from the nearest other one (the rule a GPU
    without tables uses); returns the errors (tests/test_kernel_model.py reads them). `refit`:
    the scaling exponents fitted without the held-out GPU, instead of SCALING_EXPONENT."""
    launch_s = launch_us * 1e-6
    ops, steps, sources, exponents = {}, {}, {}, {}
    for target in TABLE_DEVICE:
        sources[target] = source = nearest_table(table_device(target), exclude=target)
        fitted = fit_exponents(target, launch_s) if refit else None
        exponents[target] = fitted
        key = None if fitted is None else tuple(sorted(fitted.items()))
        ops[target] = operator_errors(target, source, launch_s, key)
        steps[target] = step_errors(target, source, launch_s, key)
    step_families = sorted({f for v in steps.values() for f in v["scaled"]})
    return {"operators": ops, "steps": steps, "sources": sources, "step_families": step_families,
            "exponents": exponents}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launch-us", type=float, default=5.0, help="kernel launch cost kept unscaled, microseconds")
    parser.add_argument("--refit", action="store_true",
                        help="fit the per-operator scaling exponents without each held-out GPU (slow: every GPU pair)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the borrowing warning, once per GPU
    result = run(args.launch_us, args.refit)
    if args.refit:
        print("scaling exponents fitted without each held-out GPU:")
        for target, fitted in result["exponents"].items():
            print(f"  {TABLE_DEVICE[target]:<22}" + ", ".join(f"{op} {v:.2f}" for op, v in fitted.items()))
        print(f"on all GPUs (SCALING_EXPONENT): {fit_exponents(None, args.launch_us * 1e-6)}")
    print_table("per operator", result["operators"], OPERATOR_FAMILIES, result["sources"])
    print_table("whole steps, kernel model GPU time", result["steps"], result["step_families"], result["sources"])
    for title, errs, fams in (("per operator", result["operators"], OPERATOR_FAMILIES),
                              ("whole steps", result["steps"], result["step_families"])):
        for name, s in summary(errs, fams).items():
            print(f"{title:<13} {name:<9} median of family medians {s['median_of_medians_pct']:5.1f} %, worst "
                  f"{s['worst_abs_pct']:6.1f} %, families with median <= 5 %: {s['families_within_5pct_median']}"
                  f"/{s['families']}")


if __name__ == "__main__":
    main()
