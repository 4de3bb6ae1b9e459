"""The deployment a sizing chose, as files an operator starts from: the `vllm serve` command line
and a Kubernetes Deployment with a HorizontalPodAutoscaler.

vLLM flag names are those of `vllm serve --help` (docs.vllm.ai "Engine Arguments", checked
2026-12): --tensor-parallel-size, --pipeline-parallel-size, --max-num-seqs,
--max-num-batched-tokens, --max-model-len, --block-size, --gpu-memory-utilization,
--[no-]enable-chunked-prefill, --[no-]enable-prefix-caching, --num-gpu-blocks-override,
--kv-cache-dtype, --quantization. Values are the simulated ones (the deployment plan's resolved
batch-token budget and context length), so the real engine runs with what was simulated.

Assumptions, written into the manifest: the image is vLLM's OpenAI server (vllm/vllm-openai); the
HPA scales on the vLLM gauge that matches the scenario's autoscaler metric, at its target
(queue_depth: vllm:num_requests_waiting; concurrency: vllm:num_requests_running, which leaves out
the waiting requests simcost's concurrency counts; kv_cache: vllm:kv_cache_usage_perc), else on
waiting requests at an assumed target; a metrics adapter (prometheus-adapter) must expose it.
"""

from __future__ import annotations

import re
import shlex

from simcost.errors import InputError
from simcost.scenario.scenario import Scenario

IMAGE = "vllm/vllm-openai:latest"
PORT = 8000
# the scenario's autoscaler metric -> vLLM's gauge (docs.vllm.ai "Metrics", v1, checked 2026-12); a metrics
# adapter exposes it to the HPA with ':' made '_'
VLLM_GAUGES = {"queue_depth": "vllm:num_requests_waiting", "concurrency": "vllm:num_requests_running",
               "kv_cache": "vllm:kv_cache_usage_perc"}
ITERATION_POLICIES = ("prefill_first", "chunked")  # the ones vLLM runs; request-level batching is not vLLM's


def hf_model_id(scenario: Scenario) -> str:
    """The Hugging Face repository the catalog entry cites (its spec source), else its key."""
    model = scenario.specs.model(scenario.model.name, "model.name")
    found = re.search(r"Hugging Face ([\w.-]+/[\w.-]+)", model.sources.get("spec", {}).get("source", ""))
    return found.group(1) if found else model.key


def vllm_args(scenario: Scenario) -> list[str]:
    """`vllm serve MODEL --flag value ...` for one replica of the scenario's deployment."""
    from simcost.perf.deployment import plan_deployment

    engine, hw = scenario.engine, scenario.hardware
    if engine.policy not in ITERATION_POLICIES:
        raise InputError("engine.policy", f"'{engine.policy}' is request-level batching, not vLLM's scheduler; "
                                          f"vLLM arguments exist for {' and '.join(ITERATION_POLICIES)}")
    dep = plan_deployment(scenario)
    args = ["vllm", "serve", hf_model_id(scenario), "--tensor-parallel-size", str(hw.tensor_parallel)]
    if hw.pipeline_parallel > 1:
        args += ["--pipeline-parallel-size", str(hw.pipeline_parallel)]
    dp = dep.data_parallel  # data-parallel attention: vLLM's batch limits are per DP rank
    if dep.expert_parallel > 1:
        args += ["--enable-expert-parallel"] + (["--data-parallel-size", str(dp)] if dp > 1 else [])
    args += ["--max-num-seqs", str(-(-engine.max_num_seqs // dp)),
             "--max-num-batched-tokens", str(-(-dep.max_num_batched_tokens // dp)),
             "--max-model-len", str(dep.max_model_len), "--block-size", str(engine.block_size),
             "--gpu-memory-utilization", f"{hw.memory_utilization:g}",
             "--enable-chunked-prefill" if engine.policy == "chunked" else "--no-enable-chunked-prefill",
             "--enable-prefix-caching" if engine.prefix_caching else "--no-enable-prefix-caching"]
    if engine.num_kv_blocks is not None:
        args += ["--num-gpu-blocks-override", str(engine.num_kv_blocks)]
    if scenario.model.kv_cache_format == "fp8":
        args += ["--kv-cache-dtype", "fp8"]
    if dep.weight_format == "fp8" and dep.model.weight_format != "fp8":  # quantized on load
        args += ["--quantization", "fp8"]
    return args


def vllm_command(scenario: Scenario) -> str:
    """vllm_args as one shell line, each flag on its own continued line."""
    args = vllm_args(scenario)
    head, flags = args[:3], args[3:]
    lines = [shlex.join(head)]
    i = 0
    while i < len(flags):
        takes_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        lines.append(shlex.join(flags[i:i + 2] if takes_value else flags[i:i + 1]))
        i += 2 if takes_value else 1
    return " \\\n  ".join(lines) + "\n"


def replica_bounds(scenario: Scenario, replicas: int) -> tuple[int, int]:
    """HPA minReplicas/maxReplicas: the scenario's autoscaler's when it has them (at least one, as
    an HPA needs), else the sized fleet's N up to N+2 (the spares the sizing priced)."""
    scaler = scenario.fleet.autoscaler
    low, high = getattr(scaler, "min_replicas", None), getattr(scaler, "max_replicas", None)
    if low is not None and high is not None:
        return max(1, low), max(1, low, high)
    return replicas, replicas + 2


def kubernetes_manifests(scenario: Scenario, replicas: int, name: str | None = None) -> list[dict]:
    """[Deployment, HorizontalPodAutoscaler] for `replicas` replicas of the scenario's deployment."""
    from simcost.perf.deployment import plan_deployment

    dep = plan_deployment(scenario)
    app = _k8s_name(name or scenario.name)
    args = vllm_args(scenario)
    devices = dep.tensor_parallel * dep.pipeline_parallel
    resource = "nvidia.com/gpu" if dep.device.kind == "gpu" else f"{dep.device.kind}.example.com/device"
    labels = {"app": app, "simcost/device": dep.device.key, "simcost/model": dep.model.key}
    low, high = replica_bounds(scenario, replicas)
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": app, "labels": labels,
                     "annotations": {"simcost/note": f"sized by simcost for {scenario.name}; {dep.device.key} "
                                                     f"x {devices} per replica"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": [{
                     "name": "vllm", "image": IMAGE, "command": args[:2], "args": args[2:],
                     "ports": [{"containerPort": PORT, "name": "http"}],
                     "resources": {"limits": {resource: devices}, "requests": {resource: devices}},
                     "readinessProbe": {"httpGet": {"path": "/health", "port": PORT}, "periodSeconds": 5}}]}}}}
    metric, target, note = hpa_metric(scenario)
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": app, "labels": dict(labels),  # copies: no YAML anchors in the manifest
                     "annotations": {"simcost/metric": note}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
                 "minReplicas": low, "maxReplicas": high,
                 "metrics": [{"type": "Pods", "pods": {"metric": {"name": metric.replace(":", "_")},
                                                       "target": {"type": "AverageValue", "averageValue": f"{target:g}"}}}]}}
    return [deployment, hpa]


def hpa_metric(scenario: Scenario) -> tuple[str, float, str]:
    """(vLLM gauge, per-pod target, where they come from) for the HPA."""
    scaler = scenario.fleet.autoscaler
    metric, target = getattr(scaler, "metric", None), getattr(scaler, "target", None)
    if metric in VLLM_GAUGES and target is not None:
        return VLLM_GAUGES[metric], float(target), f"the scenario's autoscaler: {metric} at its target"
    target = max(1, scenario.engine.max_num_seqs // 8)
    return VLLM_GAUGES["queue_depth"], float(target), (f"an assumption: {target} waiting requests per pod (1/8 of "
                                                        "max_num_seqs); set it from your own runs")


def _k8s_name(text: str) -> str:
    """An RFC 1123 label: lower case alphanumerics and '-', at most 63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "simcost"
