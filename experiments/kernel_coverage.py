"""How much of a step the kernel-table model takes from measured rows (`step_time_measured_fraction`)
per GPU and model: the coverage tables of docs/step_model.md ("Coverage").

    python experiments/kernel_coverage.py

A mix of four steps, summed: decode of 32 sequences at 2,048 tokens of context, one prefill of
2,048 tokens, decode of one sequence at 1,000, and a chunked step of a 512-token prompt chunk
with 16 decode sequences at 2,048. The measured share is measured seconds over all seconds of
the four (simcost.perf.kernel_reference's split, the one the run summary accumulates).
1. dense and MoE models in bf16 at TP1 and TP8 on each GPU's own tables, whether or not the
   weights fit (what the tables cover);
2. multi-head latent attention: DeepSeek-V3 in its native FP8 (block-scaled MLA modules and MoE
   rows) at TP8 and at EP8 with data-parallel attention, as whole deployments (explicit
   `perf.model: kernels`); "-" where the weights do not fit the 8 GPUs.
"""

from __future__ import annotations

import warnings

from simcost.errors import InputError
from simcost.perf import step_model as sm
from simcost.perf.calibrate import Pair
from simcost.perf.deployment import plan_deployment
from simcost.perf.kernel_reference import kernel_step_time_s_py
from simcost.perf.roofline import default_factors
from simcost.perf.step_model import kernel_step_params
from simcost.scenario.scenario import scenario_from_dict

DEVICES = ("a100-80gb", "h100-sxm", "h200", "b200", "l40s", "rtx-pro-6000-server")
MODELS = ("llama-3.1-8b", "qwen3-32b", "llama-3.1-70b", "mixtral-8x7b", "qwen3-30b-a3b", "gpt-oss-120b")
MLA_DEVICES = ("h100-sxm", "h200", "b200", "gb200-nvl72")
# (prompt tokens, prompt requests, decode sequences, context per decode sequence)
STEPS = ((0, 0, 32, 2048), (2048, 1, 0, 0), (0, 0, 1, 1000), (512, 1, 16, 2048))


def scenario(model: dict, hardware: dict):
    return scenario_from_dict({
        "name": "coverage", "seed": 1, "duration_s": 60.0,
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                     "input_tokens": {"dist": "fixed", "value": 512},
                     "output_tokens": {"dist": "fixed", "value": 64}},
        "model": model, "hardware": hardware, "perf": {"model": "kernels"},
        "fleet": {"price_usd_per_device_hour": 1.0},  # not used: only the step times are read
        "engine": {"max_model_len": 16384, "max_num_seqs": 256}})


def share_of_steps(p) -> float | None:
    """Measured seconds over all seconds of STEPS; None where `p` runs the roofline."""
    if p[sm.P_KIND] != sm.KIND_KERNELS:
        return None
    total = measured = 0.0
    for prompt, requests, decode, context in STEPS:
        kv = float(decode * context)
        pairs = prompt * (prompt + 1) / 2 + decode * (context + 1.0)
        t, m = kernel_step_time_s_py(p, sm.NUM_PARAMS, p[sm.P_STEP_OVERHEAD_S], p[sm.P_PIPELINE_S_PER_TOKEN],
                                     prompt, decode, pairs, kv, requests)
        total, measured = total + t, measured + m
    return measured / total


def dense_share(device_key: str, model_key: str, tp: int) -> float | None:
    """The kernel model at `tp` on the device's own tables, bf16, whether or not the weights fit
    (the table shows what the tables cover, not what fits)."""
    pair = Pair.of(device_key, model_key, "bf16")
    factors = default_factors(pair.device)
    p = kernel_step_params(pair.params(tp, factors), pair.device, pair.model, tp, "bf16", "bf16", "bf16", factors)
    return share_of_steps(p)


def deployment_share(model: dict, hardware: dict) -> float | None:
    """The measured share of a whole scenario's deployment; None where it does not fit."""
    try:
        s = scenario(model, hardware)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return share_of_steps(sm.step_params(s, plan_deployment(s)))
    except InputError:
        return None


def pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def main() -> None:
    print("Measured share, bf16, TP1 / TP8:")
    print("| device | " + " | ".join(MODELS) + " |")
    print("|---" * (len(MODELS) + 1) + "|")
    for device in DEVICES:
        cells = []
        for model in MODELS:
            one, eight = (dense_share(device, model, t) for t in (1, 8))
            cells.append(f"TP1 {pct(one)}, TP8 {pct(eight)}")
        print(f"| {device} | " + " | ".join(cells) + " |")
    print("\nDeepSeek-V3, FP8 (block-scaled), 8 GPUs:")
    print("| device | TP8 | EP8, data-parallel attention |")
    print("|---|---|---|")
    for device in MLA_DEVICES:
        tp8 = deployment_share({"name": "deepseek-v3"}, {"device": device, "tensor_parallel": 8})
        ep8 = deployment_share({"name": "deepseek-v3"}, {"device": device, "tensor_parallel": 1, "expert_parallel": 8,
                                                       "data_parallel_attention": True})
        print(f"| {device} | {pct(tp8)} | {pct(ep8)} |")


if __name__ == "__main__":
    main()
