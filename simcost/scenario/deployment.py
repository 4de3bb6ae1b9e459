"""What runs and how: the model, the hardware of a replica, the step-time model and the engine's
batching, scheduling and KV-cache knobs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, cast, get_args

from simcost.errors import InputError
from simcost.scenario.schema import bounds

# vLLM's --block-size choices (CacheConfig.BlockSize): its paged-attention kernels take no others
VLLM_BLOCK_SIZES = (1, 8, 16, 32, 64, 128)

WeightFormat = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4", "nvfp4", "mxfp4"]


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str
    weight_format: WeightFormat | None = None  # None: the catalog's native format
    kv_cache_format: Literal["fp32", "bf16", "fp16", "fp8", "int8"] | None = None  # None: bf16


@dataclass(frozen=True, kw_only=True)
class HardwareConfig:
    device: str
    tensor_parallel: int = field(default=1, metadata=bounds(ge=1))
    # stages of tensor_parallel devices each; a replica spans tensor_parallel * pipeline_parallel devices
    pipeline_parallel: int = field(default=1, metadata=bounds(ge=1))
    memory_utilization: float = field(default=0.9, metadata=bounds(gt=0, le=1))
    devices_per_node: int | None = field(default=None, metadata=bounds(ge=1))  # None: catalog, else 8 GPUs/TPUs, 2 CPUs, 1 edge
    pipeline_link_gb_per_s: float | None = field(default=None, metadata=bounds(gt=0))  # None: the device's scale-up link
    # a pipelined step's micro-batches (roofline; opt-in): None or 1: the stages in sequence
    pipeline_micro_batches: int | None = field(default=None, metadata=bounds(ge=1))
    # Mixture of experts: the routed experts split over expert_parallel devices (vLLM's
    # --enable-expert-parallel). Without data_parallel_attention it must equal tensor_parallel;
    # with it, attention runs data parallel over expert_parallel / tensor_parallel groups and the
    # replica spans expert_parallel x pipeline_parallel devices (simcost.perf.expert_parallel).
    expert_parallel: int = field(default=1, metadata=bounds(ge=1))
    data_parallel_attention: bool = False
    inter_node_gb_per_s: float | None = field(default=None, metadata=bounds(gt=0))  # None: per-device NIC assumption


@dataclass(frozen=True, kw_only=True)
class PerfConfig:
    """Step-time model. `auto` (the default) runs `kernels` where the device has measured kernel
    tables (its own, or a same-generation NVLink GPU's) covering the model, else `roofline`; the
    run summary's perf_model says which and why (simcost.perf.model_choice, docs/fidelity.md).
    `roofline` (docs/design.md section 4) takes its efficiency factors from the
    device catalog unless overridden here; `constant` is for tests and theory checks:
    prefill step = step_overhead_s + prefill_s_per_token * tokens, decode step = decode_step_s;
    `table` interpolates the measured step times of `table` (simcost.perf.step_table); `kernels`
    sums measured vLLM kernel latencies per operator (simcost.perf.kernel_model, docs/step_model.md)."""

    # auto: kernels on a GPU with trusted kernel tables that cover the model, else roofline; the
    # summary's perf_model says which and why (docs/fidelity.md, "Which step-time model runs")
    model: Literal["auto", "roofline", "constant", "table", "kernels"] = "auto"
    mfu: float | None = field(default=None, metadata=bounds(gt=0, le=1))
    mbu: float | None = field(default=None, metadata=bounds(gt=0, le=1))
    step_overhead_s: float | None = field(default=None, metadata=bounds(ge=0))
    prefill_overhead_s: float | None = field(default=None, metadata=bounds(ge=0))  # roofline: extra per step with prefill
    prefill_request_s: float | None = field(default=None, metadata=bounds(ge=0))  # roofline: extra per request prefilled in a step
    attention_efficiency: float | None = field(default=None, metadata=bounds(gt=0, le=1))  # roofline: attention rate / GEMM rate
    allreduce_latency_s: float | None = field(default=None, metadata=bounds(ge=0))  # roofline: per all-reduce over 2 devices
    prefill_s_per_token: float = field(default=0.0, metadata=bounds(ge=0))
    decode_step_s: float = field(default=0.0, metadata=bounds(ge=0))
    # A calibrated profile written by `simcost calibrate` (a path, relative to the scenario file):
    # its fitted factors replace the device catalog's; mfu/mbu/step_overhead_s set here still win.
    profile: str | None = None
    # model "table": measured step times (a CSV in a layout `simcost calibrate` reads), interpolated
    table: str | None = None
    # model "kernels": whether small steps run as CUDA graphs (vLLM V1's default, up to
    # min(2 x engine.max_num_seqs, 512) tokens; false for enforce_eager or older engines), and the
    # CPU seconds per layer of an eager step
    cuda_graphs: bool = True
    eager_s_per_layer: float | None = field(default=None, metadata=bounds(ge=0))

    def _check(self, path: str) -> None:
        if (self.model == "table") != (self.table is not None):
            raise InputError(f"{path}.table", "missing; model 'table' needs a measurements CSV" if self.table is None
                             else f"given with model '{self.model}'; set model: table")
        if self.model == "constant" and self.prefill_s_per_token == 0 and (self.step_overhead_s or 0) == 0:
            raise InputError(f"{path}.prefill_s_per_token", "0 with no step_overhead_s; a constant model needs a positive prefill time")
        if self.model in ("roofline", "auto") and (self.prefill_s_per_token or self.decode_step_s):
            raise InputError(f"{path}.model", f"{self.model} does not take prefill_s_per_token/decode_step_s; "
                             f"use model: constant")


@dataclass(frozen=True, kw_only=True)
class WorkloadAcceptance:
    """The draft acceptance rate of one workload entry (by its name), e.g. code accepts more."""

    workload: str
    acceptance_rate: float = field(metadata=bounds(ge=0, le=1))
    acceptance_concentration: float | None = field(default=None, metadata=bounds(gt=0))  # see SpeculativeConfig


SPECULATIVE_METHODS = ("draft", "eagle", "mtp")


@dataclass(frozen=True, kw_only=True)
class SpeculativeConfig:
    """Speculative decoding (simcost.engine.speculation): each decode step drafts
    num_speculative_tokens tokens per sequence and verifies them in one target step of k + 1
    tokens; a sequence keeps the accepted prefix of the drafts plus one token of the target's own.
    Each draft is accepted with probability acceptance_rate (per workload entry where
    per_workload names it) until the first rejection. Drafts cost the draft model's decode steps
    (method draft, draft_model) or, for an EAGLE head or DeepSeek's multi-token-prediction module,
    draft_step_fraction of a target decode step each (default 0.05, a simcost assumption: one
    extra layer and the head of a ~30-60-layer model)."""

    method: Literal["draft", "eagle", "mtp"]
    num_speculative_tokens: int = field(metadata=bounds(ge=1, le=16))
    acceptance_rate: float = field(metadata=bounds(ge=0, le=1))
    per_workload: tuple[WorkloadAcceptance, ...] = ()
    # a rate per request instead of one per workload: Beta with mean acceptance_rate and this
    # concentration (alpha + beta; larger is tighter), drawn from the speculation stream
    acceptance_concentration: float | None = field(default=None, metadata=bounds(gt=0))
    draft_model: str | None = None  # method draft: a catalog model on the same devices
    draft_step_fraction: float | None = field(default=None, metadata=bounds(gt=0, le=1))
    # chunked steps that also carry prompt chunks: their decoding sequences verify drafts too (as
    # vLLM V1 does); false keeps those steps at one token per sequence
    in_mixed_steps: bool = False

    def _check(self, path: str) -> None:
        if self.method == "draft" and self.draft_model is None:
            raise InputError(f"{path}.draft_model", "missing; method draft needs the draft model's catalog name")
        if self.method != "draft" and self.draft_model is not None:
            raise InputError(f"{path}.draft_model", f"only used by method draft; {self.method} drafts with the target's own head")
        if self.method == "draft" and self.draft_step_fraction is not None:
            raise InputError(f"{path}.draft_step_fraction", "not used by method draft (the draft model's own step time is)")
        names = [w.workload for w in self.per_workload]
        if len(set(names)) != len(names):
            raise InputError(f"{path}.per_workload", f"names a workload twice: {names}")


# The batching policies, named here once: the engine registers a scheduler for each
# iteration-level one (simcost.engine.schedulers.SCHEDULERS) and runs the request-level ones in
# simcost.engine.request_level; tests/test_engine.py checks the two agree.
IterationPolicy = Literal["prefill_first", "chunked"]
RequestLevelPolicy = Literal["one_at_a_time", "static", "dynamic"]
BatchingPolicy = Literal[IterationPolicy, RequestLevelPolicy]
ITERATION_POLICIES: tuple[str, ...] = get_args(IterationPolicy)
REQUEST_LEVEL_POLICIES: tuple[str, ...] = get_args(RequestLevelPolicy)


# Engine presets: the defaults of the keys an engine section leaves out (`engine.preset`).
# vllm-v1 mirrors vLLM's V1 engine as `vllm serve` starts it (v0.10-v0.11, the V1 engine since
# 0.8): chunked prefill always on, automatic prefix caching on, and on GPUs of at least 70 GiB
# other than A100 a token budget of 8192 and up to 1024 running sequences, else 2048 and 256
# (EngineArgs.get_batch_defaults, usage context OPENAI_API_SERVER; max_num_seqs is then capped at
# max_num_batched_tokens). vllm-v0 is simcost's earlier default, vLLM v0 without chunked prefill
# or prefix caching, 256 sequences. See docs/background/engine.md.
EnginePreset = Literal["vllm-v1", "vllm-v0"]
PRESET_POLICY: dict[str, IterationPolicy] = {"vllm-v1": "chunked", "vllm-v0": "prefill_first"}
# the keys a preset fills in (EngineConfig.__post_init__; max_num_seqs for the device: for_device)
PRESET_KEYS = ("policy", "prefix_caching", "max_num_seqs", "kv_watermark")
V1_LARGE_GPU_BYTES = 70 * 2 ** 30  # vLLM: device_memory >= 70 GiB (and not an A100) takes the larger budget
V1_BATCHED_TOKENS_LARGE_GPU = 8192
V1_BATCHED_TOKENS = 2048  # also vLLM v0's budget with chunked prefill, and Sarathi-Serve's
V1_MAX_NUM_SEQS_LARGE_GPU = 1024
DEFAULT_MAX_NUM_SEQS = 256  # vLLM V1 on other GPUs, vLLM v0 everywhere; simcost's default elsewhere
V0_KV_WATERMARK = 0.01  # vLLM v0's BlockSpaceManager watermark (V1's scheduler has none)


def is_v1_large_gpu(device_key: str, device_kind: str, device_memory_bytes: float) -> bool:
    """vLLM V1's larger batch defaults: a GPU of at least 70 GiB whose name is not an A100's."""
    return device_kind == "gpu" and device_memory_bytes >= V1_LARGE_GPU_BYTES and "a100" not in device_key.lower()


def free_device_defaults(raw_engine: dict | None, engine: EngineConfig) -> None:
    """Drop from an engine section written out (schema.to_dict of `engine`) the keys its preset
    set for the device (max_num_seqs), so that a variant on another device or policy sets them
    again: a built scenario holds concrete values, which would otherwise carry to the variant."""
    if raw_engine is not None and engine.seqs_from_preset:
        raw_engine.pop("max_num_seqs", None)


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Batching, scheduling and KV-cache knobs (names and defaults as vLLM's where vLLM has them).

    `preset` picks the defaults of the keys left out: vllm-v1 (vLLM's V1 engine as deployed
    today: chunked prefill, automatic prefix caching, V1's token budget) or vllm-v0 (vLLM v0
    without chunked prefill or prefix caching, simcost's default before V1). Keys given win.
    Iteration-level policies (simcost.engine.replica), a new batch at every step:
      prefill_first: vLLM v0 without chunked prefill (whole prompts, prefill steps before decodes);
      chunked: vLLM v1 / Sarathi-Serve (running decodes first, prompts in chunks sharing the budget).
    Request-level policies (simcost.engine.request_level), a batch runs until its longest request ends:
      one_at_a_time: batches of one request;
      static: batches of max_num_seqs, waiting up to batch_timeout_s for the batch to fill;
      dynamic: NVIDIA Triton's dynamic batcher: a batch leaves as soon as it reaches the largest
        preferred_batch_sizes entry the queue allows, or when its oldest request has waited
        max_queue_delay_s (then as large as the queue allows, up to max_num_seqs).
    `queue` orders waiting requests for the iteration-level policies: fcfs; priority (the
    workload's priority, lower first, then arrival); sjf (shortest predicted output first:
    an oracle when sjf_prediction_sigma is 0, else the true length times a lognormal error)."""

    preset: EnginePreset = "vllm-v1"
    # None: the preset's (chunked for vllm-v1, prefill_first for vllm-v0)
    policy: BatchingPolicy = field(default=cast(BatchingPolicy, None))  # never None once built
    # None: the preset's for the device (vllm-v1 with an iteration-level policy: 1024 on GPUs of
    # >= 70 GiB other than A100, else 256; at most max_num_batched_tokens when that is given)
    max_num_seqs: int = field(default=cast(int, None), metadata=bounds(ge=1))  # never None once built
    # None: max(max_model_len, 2048) without chunked prefill; with it, vllm-v1's 8192 on GPUs of
    # >= 70 GiB other than A100, else 2048 (vllm-v0: 2048)
    max_num_batched_tokens: int | None = field(default=None, metadata=bounds(ge=1))
    block_size: int = field(default=16, metadata=bounds(ge=1))
    max_model_len: int | None = field(default=None, metadata=bounds(ge=1))  # None: the model's context length
    # share of the KV blocks an admission must leave free; None: the preset's (vllm-v1 with an
    # iteration-level policy: 0, V1's scheduler keeps none; else 0.01, vLLM v0's watermark)
    kv_watermark: float = field(default=cast(float, None), metadata=bounds(ge=0, le=0.5))  # never None once built
    max_waiting: int | None = field(default=None, metadata=bounds(ge=0))  # None: unbounded queue
    num_kv_blocks: int | None = field(default=None, metadata=bounds(ge=1))  # None: from memory (vLLM's num_gpu_blocks_override)
    queue: Literal["fcfs", "priority", "sjf"] = "fcfs"
    sjf_prediction_sigma: float = field(default=0.0, metadata=bounds(ge=0))  # sd of ln(predicted / true)
    batch_timeout_s: float = field(default=0.0, metadata=bounds(ge=0))  # static
    preferred_batch_sizes: tuple[int, ...] | None = None  # dynamic; None: max_num_seqs only
    max_queue_delay_s: float = field(default=0.0, metadata=bounds(ge=0))  # dynamic
    # KV cache
    preemption: Literal["recompute", "swap"] = "recompute"  # swap: KV to host memory and back over host_link
    swap_space_gb: float = field(default=4.0, metadata=bounds(ge=0))  # host memory for swapped KV per device (vLLM's swap_space, GiB)
    # vLLM's enable_prefix_caching (automatic, content-hashed full blocks); None: the preset's
    # (on for vllm-v1's iteration-level policies with recompute preemption, off otherwise)
    prefix_caching: bool = field(default=cast(bool, None))  # never None once built
    host_cache_blocks: int = field(default=0, metadata=bounds(ge=0))  # host-memory tier for evicted prefix blocks
    host_link_gb_per_s: float | None = field(default=None, metadata=bounds(gt=0))  # None: the device's PCIe link
    speculative: SpeculativeConfig | None = None  # speculative decoding (iteration-level policies)
    # seconds from a client sending a request to the engine receiving it (HTTP, chat template,
    # tokenisation, the API server's hand-off to the engine core): part of every TTFT and E2E a
    # client measures, never of TPOT. 0: the engine's own latencies. `simcost validate` estimates
    # it from a log. Fleet-wide: a pool's engine section cannot set another value
    frontend_s: float = field(default=0.0, metadata=bounds(ge=0, le=60))
    # max_num_seqs was left to the preset (for_device may then raise it for the device)
    seqs_from_preset: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # a preset fills the keys left out; the fields hold concrete values from here on, so
        # results and to_dict show what ran
        if self.policy is None:
            object.__setattr__(self, "policy", PRESET_POLICY[self.preset])
        if self.max_num_seqs is None:
            object.__setattr__(self, "max_num_seqs", self._preset_max_num_seqs(False))
            object.__setattr__(self, "seqs_from_preset", True)
        if self.kv_watermark is None:
            object.__setattr__(self, "kv_watermark", 0.0 if self.preset == "vllm-v1" and self.policy in ITERATION_POLICIES
                               else V0_KV_WATERMARK)
        if self.prefix_caching is None:
            # V1 has no swap (it recomputes), so asking for swap leaves prefix caching off
            object.__setattr__(self, "prefix_caching", self.preset == "vllm-v1" and self.policy in ITERATION_POLICIES
                               and self.preemption == "recompute")

    def _preset_max_num_seqs(self, large_gpu: bool) -> int:
        seqs = (V1_MAX_NUM_SEQS_LARGE_GPU if large_gpu and self.preset == "vllm-v1" and self.policy in ITERATION_POLICIES
                else DEFAULT_MAX_NUM_SEQS)
        return min(seqs, self.max_num_batched_tokens or seqs)  # vLLM caps it at the token budget

    def for_device(self, device_key: str, device_kind: str, device_memory_bytes: float) -> EngineConfig:
        """This engine on a device: max_num_seqs, when left to the preset, as the preset sets it
        there (simcost.scenario.scenario.Scenario fills it in for its hardware.device)."""
        if not self.seqs_from_preset:
            return self
        seqs = self._preset_max_num_seqs(is_v1_large_gpu(device_key, device_kind, device_memory_bytes))
        if seqs == self.max_num_seqs:
            return self
        engine = replace(self, max_num_seqs=seqs)
        object.__setattr__(engine, "seqs_from_preset", True)
        return engine

    def default_max_num_batched_tokens(self, max_model_len: int, device_key: str, device_memory_bytes: float) -> int:
        """The token budget when max_num_batched_tokens is left out: a whole max-length prompt
        without chunked prefill (vLLM refuses less), else the preset's chunk budget."""
        if self.policy != "chunked":
            return max(max_model_len, V1_BATCHED_TOKENS)
        if self.preset == "vllm-v1" and device_memory_bytes >= V1_LARGE_GPU_BYTES and "a100" not in device_key.lower():
            return V1_BATCHED_TOKENS_LARGE_GPU
        return V1_BATCHED_TOKENS

    def _check(self, path: str) -> None:
        if self.block_size not in VLLM_BLOCK_SIZES:
            raise InputError(f"{path}.block_size", f"{self.block_size} is not a block size vLLM accepts; expected one of "
                             f"{', '.join(map(str, VLLM_BLOCK_SIZES))}")
        if self.max_waiting == 0:
            raise InputError(f"{path}.max_waiting", "0 rejects every request, even on an idle fleet (each waits in the "
                             "queue until the next step); expected >= 1, or null for no limit")
        if self.policy not in ITERATION_POLICIES:
            for key, default in (("queue", "fcfs"), ("preemption", "recompute"), ("prefix_caching", False),
                                 ("speculative", None)):
                if getattr(self, key) != default:
                    raise InputError(f"{path}.{key}", f"{getattr(self, key)!r} needs an iteration-level policy "
                                     f"(prefill_first or chunked); {self.policy} runs each batch to completion")
        if self.preferred_batch_sizes is not None:
            if self.policy != "dynamic":
                raise InputError(f"{path}.preferred_batch_sizes", f"only used by policy dynamic, not {self.policy}")
            bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_num_seqs]
            if bad or not self.preferred_batch_sizes:
                raise InputError(f"{path}.preferred_batch_sizes", f"{list(self.preferred_batch_sizes)}: expected sizes "
                                 f"between 1 and max_num_seqs={self.max_num_seqs}")
        if self.prefix_caching and self.preemption == "swap":
            raise InputError(f"{path}.preemption", "swap with prefix_caching is not modelled (vLLM v1 recomputes); use recompute")
        if self.host_cache_blocks and not self.prefix_caching:
            raise InputError(f"{path}.host_cache_blocks", "a host tier for prefix blocks needs prefix_caching: true")
