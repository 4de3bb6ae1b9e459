"""The roofline's tensor-parallel all-reduce on the HGX A100, H100 and H200 (issue 15): fit a
catalog `interconnect` (switch form: one flat latency per all-reduce, plus 2 (t-1)/t of the
message over an effective bandwidth) to the measured vLLM custom all-reduce tables
(simcost/data/kernels), and compare the roofline's whole steps with the kernel-table model's,
with the legacy (t - 1) x allreduce_latency_s charge and with the fitted fabric.

    python experiments/validate_roofline_fabric.py

1. Fit, per GPU: latency and bandwidth minimising the squared log error over the rows the kernel
   model reads for a step (CUDA-graph rows up to GRAPH_MAX_BYTES, eager rows above: vLLM runs
   steps above 512 tokens eagerly), sizes FIT_BYTES, t = 2, 4, 8 jointly; then the error per t
   and size band. Also the ring form (a latency per hop of 2 (t-1)) for comparison.
2. Whole steps (decode at batch 1/8/64/256 with 1024 tokens of context, prefill of 2k and 8k
   tokens) of Llama-3.1-8B, Llama-3.1-70B and Qwen3-30B-A3B at TP 1/2/4/8 in bf16 under the
   catalog's default factors: roofline / kernel model, median and worst, legacy and fitted; and
   the 70B batch-1 decode step by TP under each.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize

from simcost.catalog.specs import get_device
from simcost.catalog.types import Interconnect
from simcost.perf.calibrate import Pair
from simcost.perf.kernel_tables import load_tables
from simcost.perf.roofline import default_factors
from simcost.perf.step_model import kernel_step_params, step_time_s

GPUS = {"a100-80gb": "a100_sxm", "h100-sxm": "h100_sxm", "h200": "h200_sxm"}
DEGREES = (2, 4, 8)
FIT_BYTES = (1e3, 256e6)  # a 1-token all-reduce of a 4096-wide model (8 KB) up to 16k x 8192 prefill
GRAPH_MAX_BYTES = 8 * 2**20  # 512 tokens x 8192 hidden x 2 bytes: larger steps run eagerly
BANDS = {"<=64KB": (0, 64e3), "64KB-4MB": (64e3, 4.2e6), "4MB-256MB": (4.2e6, 2.7e8)}
MODELS = ("llama-3.1-8b", "llama-3.1-70b", "qwen3-30b-a3b")
TPS = (1, 2, 4, 8)
DECODE_BATCHES = (1, 8, 64, 256)
PREFILLS = (2048, 8192)
CONTEXT = 1024


def rows(name: str) -> np.ndarray:
    """(t, bytes, seconds) the kernel model reads: graph rows up to GRAPH_MAX_BYTES, eager above."""
    tables = load_tables(name)
    graph, eager = tables["allreduce/vllm_graph"], tables["allreduce/vllm_eager"]
    out = np.concatenate([graph[graph[:, 1] <= GRAPH_MAX_BYTES], eager[eager[:, 1] > GRAPH_MAX_BYTES]])
    keep = np.isin(out[:, 0], DEGREES) & (out[:, 1] >= FIT_BYTES[0]) & (out[:, 1] <= FIT_BYTES[1])
    out = out[keep]
    out[:, 2] /= 1e3
    return out


def model_s(kind: str, latency_s: float, bytes_per_s: float, t: np.ndarray, size: np.ndarray) -> np.ndarray:
    hops = 1.0 if kind == "nvswitch" else 2.0 * (t - 1)
    return hops * latency_s + 2.0 * (t - 1) / t * size / bytes_per_s


def fit(name: str, kind: str = "nvswitch") -> tuple[float, float]:
    """(latency_s, bytes_per_s) minimising the squared log error over rows(name)."""
    r = rows(name)

    def loss(x):
        pred = model_s(kind, np.exp(x[0]), np.exp(x[1]), r[:, 0], r[:, 1])
        return float(np.sum(np.log(pred / r[:, 2]) ** 2))
    res = minimize(loss, np.log([5e-6, 200e9]), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-10})
    return float(np.exp(res.x[0])), float(np.exp(res.x[1]))


def fit_report(name: str, kind: str, latency_s: float, bytes_per_s: float) -> None:
    r = rows(name)
    err = model_s(kind, latency_s, bytes_per_s, r[:, 0], r[:, 1]) / r[:, 2] - 1.0
    print(f"  {kind}: latency {latency_s * 1e6:.2f} us, bandwidth {bytes_per_s / 1e9:.0f} GB/s;"
          " error median |%| / worst signed % by t and size:")
    for t in DEGREES:
        cells = []
        for band, (lo, hi) in BANDS.items():
            e = err[(r[:, 0] == t) & (r[:, 1] > lo) & (r[:, 1] <= hi)]
            worst = e[np.argmax(np.abs(e))]
            cells.append(f"{band} {np.median(np.abs(e)) * 100:4.0f} / {worst * 100:+4.0f}")
        print(f"    t={t}: " + " | ".join(cells))


def steps(device, model_key: str, tp: int):
    """[(label, roofline s, kernel model s)] over the step shapes, with the catalog's factors."""
    pair = Pair.of(device.key, model_key, "bf16")
    pair = dataclasses.replace(pair, device=device)
    factors = default_factors(device)
    roof = pair.params(tp, factors)
    kern = kernel_step_params(roof, device, pair.model, tp, "bf16", "bf16", "bf16", factors)
    out = []
    for b in DECODE_BATCHES:
        kv = b * CONTEXT
        out.append((f"decode b{b}", *(step_time_s(p, 0, b, kv + b, kv, 0) for p in (roof, kern))))
    for n in PREFILLS:
        out.append((f"prefill {n}", *(step_time_s(p, n, 0, n * (n + 1) / 2.0, 0.0, 1) for p in (roof, kern))))
    return out


def compare(key: str, fabric: Interconnect | None) -> None:
    device = dataclasses.replace(get_device(key), interconnect=fabric)
    label = "legacy" if fabric is None else f"fitted {fabric.latency_s * 1e6:.1f} us {fabric.bytes_per_s / 1e9:.0f} GB/s"
    print(f"  {label}: roofline / kernel model, median and worst (max |log ratio|) over decode b1-256 and prefill 2k/8k")
    decode_70b = {}
    for model_key in MODELS:
        cells = []
        for tp in TPS:
            try:
                s = steps(device, model_key, tp)
            except Exception as err:  # a layout the tables or the memory refuse
                cells.append(f"TP{tp} -- ({type(err).__name__})")
                continue
            ratio = np.array([r / k for _, r, k in s])
            worst = ratio[np.argmax(np.abs(np.log(ratio)))]
            cells.append(f"TP{tp} {np.median(ratio):.2f} / {worst:.2f}")
            if model_key == "llama-3.1-70b":
                decode_70b[tp] = (s[0][1], s[0][2])
        print(f"    {model_key:15s} " + " | ".join(cells))
    times = " ".join(f"TP{tp} {r * 1e3:.1f}/{k * 1e3:.1f}" for tp, (r, k) in decode_70b.items())
    roof = [decode_70b[tp][0] for tp in (2, 4, 8) if tp in decode_70b]
    print(f"    70B decode b1 ms roofline/kernels: {times}; roofline TP8<TP4<TP2: {roof == sorted(roof, reverse=True)}")


def main() -> None:
    fitted = {}
    for key, name in GPUS.items():
        print(f"{key} ({name}.npz, {len(rows(name))} rows):")
        for kind in ("nvswitch", "nvlink_ring"):
            latency_s, bytes_per_s = fit(name, kind)
            fit_report(name, kind, latency_s, bytes_per_s)
            if kind == "nvswitch":
                fitted[key] = Interconnect(kind, bytes_per_s, latency_s)
    print("\nWhole steps, roofline against the kernel-table model (bf16, catalog factors):")
    for key in GPUS:
        print(f"{key}:")
        catalog = get_device(key).interconnect
        compare(key, None)
        compare(key, catalog or fitted[key])


if __name__ == "__main__":
    main()
