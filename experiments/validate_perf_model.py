"""Fidelity of the roofline step-time model on measured data.

Fits the efficiency factors on the Splitwise A100 Llama-2-70B tensor-parallel-4 rows, predicts
the held-out tensor-parallel 2 and 8 rows, and prints per-point prefill and decode errors with
their median and worst, then the same for the uncalibrated (catalog default) model.

    python experiments/validate_perf_model.py [--loss soft_l1]

Any other measurements in a layout `simcost calibrate` reads go through the same protocol:

    python experiments/validate_perf_model.py --data perf_model.csv --device h100-sxm \
        --model llama-2-70b [--hardware h100-80gb] [--fit-tp 4] [--predict-tp 2 8]

Then the kernel-table model (perf.model: kernels, docs/step_model.md) against every measured
step-time file in the repository (MEASURED_FILES), next to the uncalibrated roofline: per family
and TP degree, median |error| and worst signed error. The kernels model is fitted on none of
these rows except, in its "eager, TP4-fitted" variant, one engine constant (CPU seconds per layer
of an eager step) taken from the TP4 decode rows and then held fixed for TP2 and TP8.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from simcost.perf.calibrate import Pair, error_summary, fit_factors, format_table, predict_s
from simcost.perf.kernel_scaling import borrowed_tables, nearest_table
from simcost.perf.kernel_tables import table_name
from simcost.perf.measurements import read_points
from simcost.perf.roofline import default_factors
from simcost.perf.step_model import kernel_step_params, step_time_s

DATA = Path(__file__).resolve().parents[1] / "simcost" / "data" / "calibration" / "splitwise_llama2-70b_a100-80gb.csv"  # shipped copy of shared/data/calibration
DEVICE, MODEL = "a100-80gb", "llama-2-70b"
# every measured step-time file in the repository: (family, file, device, model); the Splitwise
# engine (2023) ran without CUDA graphs, so its rows are compared with cuda_graphs off
MEASURED_FILES = [("Splitwise A100 Llama-2-70B", DATA, DEVICE, MODEL)]


def kernel_predict_s(pair: Pair, points, *, cuda_graphs: bool = True, eager_s_per_layer: float | None = None,
                     tables=None) -> np.ndarray:
    """The kernel-table model's step time for every point, counted as the engine counts a step
    (`tables`: these instead of the device's own, e.g. another GPU's scaled to it)."""
    factors = default_factors(pair.device)
    params = {tp: kernel_step_params(pair.params(tp, factors), pair.device, pair.model, tp, pair.weight_format,
                                     pair.kv_cache_format, pair.compute_format, factors,
                                     cuda_graphs=cuda_graphs, eager_s_per_layer=eager_s_per_layer, tables=tables)
              for tp in {pt.tensor_parallel for pt in points}}
    out = np.empty(len(points))
    for i, pt in enumerate(points):
        p, b = params[pt.tensor_parallel], pt.batch_size
        if pt.kind == "prefill":
            n = pt.prompt_tokens
            out[i] = step_time_s(p, b * n, 0, b * n * (n + 1) / 2.0, 0.0, b)
        else:
            kv = b * pt.context_tokens
            out[i] = step_time_s(p, 0, b, kv + b, kv, 0)
    return out


def fit_eager_s_per_layer(pair: Pair, decode_points) -> float:
    """The eager launch floor per layer that the decode points imply: the median over points of
    (measured - step overhead) / layers, for points where the GPU time alone is below it."""
    from simcost.perf.kernel_model import KERNEL_STEP_OVERHEAD_S
    gpu_s = kernel_predict_s(pair, decode_points, cuda_graphs=False, eager_s_per_layer=0.0) - KERNEL_STEP_OVERHEAD_S
    floor = np.array([pt.step_time_s for pt in decode_points]) - KERNEL_STEP_OVERHEAD_S
    return float(np.median(floor[floor > gpu_s]) / pair.model.num_layers) if (floor > gpu_s).any() else 0.0


def signed_summary(points, predicted_s: np.ndarray) -> dict[str, float]:
    err = (predicted_s / np.array([pt.step_time_s for pt in points]) - 1.0) * 100
    worst = err[np.argmax(np.abs(err))]
    return {"median_abs_pct": float(np.median(np.abs(err))), "worst_signed_pct": float(worst), "points": len(points)}


def kernel_comparison(fit_tp: int = 4) -> list[dict]:
    """Per family, TP degree and kind: the roofline (catalog defaults), the kernels model with
    its a-priori constants, and with the eager floor fitted on `fit_tp` decode rows."""
    rows = []
    for family, path, device, model in MEASURED_FILES:
        pair = Pair.of(device, model)
        points = [pt for pt in read_points(path, pair.device.key, pair.model.key) if pt not in shrinking_batches(
            read_points(path, pair.device.key, pair.model.key))]
        eager = fit_eager_s_per_layer(pair, [pt for pt in points if pt.kind == "decode" and pt.tensor_parallel == fit_tp])
        own = table_name(pair.device.key)
        borrowed = borrowed_tables(nearest_table(pair.device, exclude=own), pair.device, exclude=own)
        models = {"roofline": predict_s(pair, points, default_factors(pair.device)),
                  "kernels": kernel_predict_s(pair, points, cuda_graphs=False),
                  f"kernels, TP{fit_tp}-fitted eager floor": kernel_predict_s(pair, points, cuda_graphs=False,
                                                                          eager_s_per_layer=eager),
                  # the device's own tables left out: the nearest other GPU's scaled to it (kernel_scaling)
                  f"same, {borrowed.scaled_from} tables scaled": kernel_predict_s(
                      pair, points, cuda_graphs=False, eager_s_per_layer=eager, tables=borrowed)}
        for tp in sorted({pt.tensor_parallel for pt in points}):
            for kind in ("prefill", "decode"):
                idx = [i for i, pt in enumerate(points) if pt.tensor_parallel == tp and pt.kind == kind]
                sel = [points[i] for i in idx]
                rows.append({"family": family, "tp": tp, "kind": kind, "held_out": tp != fit_tp, "eager_s_per_layer": eager,
                             **{name: signed_summary(sel, pred[idx]) for name, pred in models.items()}})
    return rows


def print_kernel_comparison() -> None:
    rows = kernel_comparison()
    names = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    print(f"\n== kernel-table model vs roofline on every measured file (eager floor fitted on TP4 decode: "
          f"{rows[0]['eager_s_per_layer'] * 1e3:.3f} ms/layer) ==")
    print(f"{'family':<28}{'tp':>3} {'kind':<8}" + "".join(f"{n:>38}" for n in names))
    for r in rows:
        cells = "".join(f"{r[n]['median_abs_pct']:>17.1f} % {r[n]['worst_signed_pct']:>+15.1f} %  " for n in names)
        print(f"{r['family']:<28}{r['tp']:>3} {r['kind']:<8}{cells}{'' if r['held_out'] else '  (fit TP)'}")
    print("(each cell: median |error|, worst signed error; the TP2 batch-64 prefill, a measurement fault, left out)")


def summary_lines(title: str, summary: dict) -> list[str]:
    return [f"{title:<36}{kind:<8} median {s['median_abs_pct']:5.1f} %   worst {s['worst_abs_pct']:7.1f} %"
            f"   ({s['points']} points)" for kind, s in summary.items() if kind != "all"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", default="soft_l1", choices=("soft_l1", "linear", "huber", "cauchy"))
    parser.add_argument("--data", type=Path, default=DATA, help="measurements (default: the shipped Splitwise A100 rows)")
    parser.add_argument("--device", default=DEVICE)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--hardware", default=None, help="the device as the file names it, if not a catalog name")
    parser.add_argument("--model-name", default=None, help="the model as the file names it, if not a catalog name")
    parser.add_argument("--fit-tp", type=int, nargs="+", default=[4], help="tensor-parallel degrees to fit on")
    parser.add_argument("--predict-tp", type=int, nargs="+", default=[2, 8], help="held-out degrees to predict")
    args = parser.parse_args()
    loss = args.loss

    pair = Pair.of(args.device, args.model)
    names = dict(hardware_name=args.hardware, model_name=args.model_name)
    train = read_points(args.data, pair.device.key, pair.model.key, tuple(args.fit_tp), **names)
    held_out = read_points(args.data, pair.device.key, pair.model.key, tuple(args.predict_tp), **names)
    fit = fit_factors(pair, train, loss)
    default = default_factors(pair.device)
    fitted_on = "/".join(f"TP{t}" for t in args.fit_tp)

    print(f"data: {args.data}")
    print(f"fitted on {fitted_on} ({len(train)} points, loss {loss}): "
          + ", ".join(f"{n} = {v:.4g}" + (" (held)" if n in fit.fixed else "") for n, v in fit.factors.items()))
    if fit.fixed:
        print(f"  held at the catalog value: {fit.why_fixed}")
    print("catalog defaults: " + ", ".join(f"{n} = {v:.4g}" for n, v in default.items()))

    calibrated = predict_s(pair, held_out, fit.factors)
    uncalibrated = predict_s(pair, held_out, default)
    predicted_on = "/".join(f"TP{t}" for t in args.predict_tp)
    print(f"\n== calibrated on {fitted_on}, predicting {predicted_on} ==")
    print(format_table(held_out, calibrated))
    print(f"\n== uncalibrated (catalog defaults), {predicted_on} ==")
    print(format_table(held_out, uncalibrated))

    print("\n== summary (|predicted / measured - 1|) ==")
    for line in (summary_lines(f"{fitted_on} fit, in-sample", error_summary(train, fit.predicted_s))
                 + summary_lines(f"{fitted_on} fit -> {predicted_on} held out", error_summary(held_out, calibrated))
                 + summary_lines(f"uncalibrated, {predicted_on}", error_summary(held_out, uncalibrated))):
        print(line)
    suspect = shrinking_batches(held_out)
    if suspect:
        # Kept (they are measurements) but reported apart so that they do not hide the worst error of
        # the rest. In Splitwise's A100 data this is the TP2 batch-64 prefill (shorter than batch 32).
        keep = [i for i, pt in enumerate(held_out) if pt not in suspect]
        rest = [held_out[i] for i in keep]
        names = ", ".join(f"TP{pt.tensor_parallel} b{pt.batch_size} x {pt.prompt_tokens}" for pt in suspect)
        for title, pred in (("  without suspect points, fitted", calibrated), ("  without suspect points, default", uncalibrated)):
            print(summary_lines(title, error_summary(rest, pred[keep]))[0])
        print(f"note: suspect = a batched prefill shorter than a smaller batch of the same prompts ({names}); "
              "kept above, where it dominates the prefill 'worst'.")
    print_batched_prefill(train + held_out, held_out, calibrated)
    print_kernel_comparison()


def shrinking_batches(points) -> list:
    """Prefill points that take less time than a smaller batch of the same prompts at the same TP:
    physically implausible (more work, less time), so likely a measurement fault."""
    prefill = [pt for pt in points if pt.kind == "prefill"]
    return [pt for pt in prefill if any(q.tensor_parallel == pt.tensor_parallel and q.prompt_tokens == pt.prompt_tokens
                                        and q.batch_size < pt.batch_size and q.step_time_s > pt.step_time_s
                                        for q in prefill)]


def print_batched_prefill(points, held_out, predicted_s) -> None:
    """Why prefill misses 10 %: at TP4 and TP8, b >= 8 prompts of 512 tokens in one step take 17-41 %
    longer than b single-prompt steps, though a roofline step has the same FLOPs and reads the
    weights once instead of b times. prefill_request_s (a cost per prompt in the step) fits TP4's
    batches, but a ratio above 1 means the cost per prompt itself grows with the batch, which no
    per-step-affine term reproduces, and TP2's batches show almost none of it (ratio ~1.05)."""
    one = {pt.tensor_parallel: pt.step_time_s for pt in points
           if pt.kind == "prefill" and pt.batch_size == 1 and pt.prompt_tokens == 512}
    print("\n== batched prefill: measured(b x 512) / (b x measured(1 x 512)); a roofline predicts <= 1 ==")
    for tp in sorted(one):
        rows = sorted((pt.batch_size, pt.step_time_s / (pt.batch_size * one[tp])) for pt in points
                      if pt.kind == "prefill" and pt.tensor_parallel == tp and pt.prompt_tokens == 512 and pt.batch_size > 1)
        print(f"TP{tp}: " + "  ".join(f"b{b} {r:.2f}" for b, r in rows))
    errors = np.abs(predicted_s / np.array([pt.step_time_s for pt in held_out]) - 1.0) * 100
    for title, keep in (("single prompts (batch 1)", lambda pt: pt.batch_size == 1),
                        ("batched prompts (batch >= 2)", lambda pt: pt.batch_size > 1)):
        mask = np.array([pt.kind == "prefill" and keep(pt) for pt in held_out])
        if not mask.any():
            continue
        print(f"held-out prefill, {title:<28} median |error| {np.median(errors[mask]):5.1f} %  ({mask.sum()} points)")


if __name__ == "__main__":
    main()
