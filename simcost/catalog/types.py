"""The catalog's types: a device, a model, a price offer, in SI units, and the formats they run.

`simcost.catalog.specs` loads them from the YAML catalogs (`simcost.catalog.entries` checks each
entry); this module holds only what an entry becomes, and the facts about formats (bytes per
element, which compute format a device runs a weight format in).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from simcost.units import HOURS_PER_YEAR

DEVICE_KINDS = ("gpu", "cpu", "tpu", "edge")
# Formats a device may list a dense peak for (keys of `peak_tflops`).
COMPUTE_FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")
# nvfp4: NVIDIA's 4-bit float, an fp8 scale per 16 weights; mxfp4: the OCP microscaling 4-bit float,
# an 8-bit power-of-two scale per 32 weights (gpt-oss ships its experts so)
WEIGHT_FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8", "int4", "nvfp4", "mxfp4")
KV_CACHE_FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8")

GB = 1e9  # decimal gigabyte: bandwidths and most vendor memory figures
GIB = 2.0**30  # binary gibibyte: HBM capacities that vendors round to "80GB"
TERA = 1e12

DEVICE_SOURCE_GROUPS = ("spec", "power", "price", "efficiency")
# Fabrics of a tensor-parallel group: a switch (NVSwitch) or a full mesh (AMD Infinity Fabric)
# all-reduces in a near-flat latency; a ring (PCIe, NVLink bridges, TPU ICI) pays one per hop.
INTERCONNECT_KINDS = ("nvswitch", "mesh", "nvlink_ring", "pcie", "ici")
FLAT_INTERCONNECTS = ("nvswitch", "mesh")


@dataclass(frozen=True)
class Interconnect:
    kind: str  # one of INTERCONNECT_KINDS
    bytes_per_s: float  # one direction, per device (a mesh: per peer link, t - 1 of them in use at once)
    latency_s: float  # per all-reduce on a flat fabric, per ring hop otherwise
MODEL_SOURCE_GROUPS = ("spec",)
SERVING_KINDS = ("tokens", "per_item")  # decoder LLMs stepped token by token; models charged per item
# a layer's dense MLP: gated (Llama, Mistral, Qwen: gate and up projections, then down, 3 matrices
# of intermediate_size) or plain (BLOOM, GPT-J, Falcon, GPT-2, OPT: up, GELU, down, 2 matrices)
MLP_KINDS = ("gated", "plain")
ANY_REGION = "any"  # a provider-wide price, matching every region
_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")  # YYYY-MM-DD, or YYYY-MM for monthly snapshots


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator (or CPU socket, or edge board), in SI units. The price is per device,
    on-demand, or None when the catalog has none (then a scenario names a provider or a price)."""

    key: str
    name: str
    kind: str
    memory_bytes: float
    mem_bw_bytes_per_s: float
    peak_flops: dict[str, float] = field(hash=False)  # dense FLOP/s (or OP/s) per compute format
    link_bytes_per_s: float  # scale-up link (or PCIe host link), one direction
    idle_w: float
    peak_w: float
    mfu: float  # default fraction of peak FLOP/s reached by a step's matmuls
    mbu: float  # default fraction of peak memory bandwidth reached
    step_overhead_s: float  # default fixed cost per engine step (scheduling, launches)
    allreduce_latency_s: float  # default fixed cost per tensor-parallel all-reduce
    price_usd_per_hour: float | None
    sources: dict = field(hash=False, compare=False, repr=False)
    host_link_bytes_per_s: float | None = None  # PCIe to host memory, one direction (KV swap, host tier)
    aliases: tuple[str, ...] = ()  # other names for it (measurement files, other tools), e.g. "h100-80gb"
    # TPUs: the slice sizes (chips) a cloud rents; a replica must span one of them. () for devices
    # rented one by one (GPUs, CPUs) or bought.
    rentable_shapes: tuple[int, ...] = ()
    # devices joined by the scale-up link (tensor and expert parallelism stay within it): an
    # NVLink domain such as GB200 NVL72's 72 GPUs; None: the default for the kind (8 GPUs)
    devices_per_node: int | None = None
    # the tensor-parallel fabric for the roofline's all-reduce (latency + bandwidth by topology);
    # None: the legacy (t - 1) x allreduce_latency_s charge the catalog defaults were tuned with
    interconnect: Interconnect | None = None
    # a user's own measured kernel tables (a .npz or an aiconfigurator folder; absolute once the
    # catalog is read): the kernel model runs on these instead of shipped or borrowed ones
    kernel_tables: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer as in its Hugging Face config.json (dense, or a mixture of
    experts), or a model served per item (serving "per_item": shape fields 0 where not given)."""

    key: str
    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    num_params: int
    weight_format: str  # native checkpoint dtype
    max_model_len: int  # context length
    sources: dict = field(hash=False, compare=False, repr=False)
    serving: str = "tokens"  # one of SERVING_KINDS
    num_experts: int = 0  # mixture of experts; 0 for a dense model
    experts_per_token: int = 0
    expert_params: int = 0  # parameters of all experts of all layers together
    flops_per_item: float = 0.0  # per_item models: FLOPs of one item of `item_input`
    item_input: str = ""  # per_item models: the input size assumed, e.g. "one 224x224 RGB image"
    aliases: tuple[str, ...] = ()  # other names for it (measurement files, other tools), e.g. "llama2-70b"
    # local attention: a window of sliding_window tokens in num_sliding_layers of the layers (0: none),
    # also Llama 4's chunked attention (a chunk is at most a window). The KV cache keeps at most the
    # window per sequence for those layers (simcost.perf.deployment); the step model reads their
    # KV as full attention for now.
    sliding_window: int = 0
    num_sliding_layers: int = 0
    notes: str = ""  # what the entry simplifies (weight formats, sliding windows), for a reader
    # multi-head latent attention (DeepSeek-V2/V3): each layer caches one compressed latent of
    # kv_lora_rank plus a shared rotary key of qk_rope_head_dim per token, for all heads. The entry
    # gives it in its absorbed form, num_kv_heads 1 and head_dim (kv_lora_rank + qk_rope_head_dim) / 2,
    # so that 2 x num_kv_heads x head_dim is the cached width (checked at load).
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    num_shared_experts: int = 0  # always-used experts of each MoE layer (counted outside expert_params)
    first_dense_layers: int = 0  # leading layers with a dense MLP instead of experts (DeepSeek's first_k_dense)
    mlp: str = "gated"  # one of MLP_KINDS: the kernel-table model prices the MLP's GEMMs by their shapes

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    def kv_elements_per_token_per_layer(self, tp: int = 1) -> float:
        """KV-cache elements one token keeps in one layer on one of `tp` tensor-parallel devices.
        Grouped-query attention splits its KV heads over the devices (one head each at least, as
        vLLM replicates them); a latent-attention cache is one vector for all heads, so each
        device keeps all of it."""
        if self.is_mla:
            return float(self.kv_lora_rank + self.qk_rope_head_dim)
        return 2.0 * max(self.num_kv_heads / tp, 1.0) * self.head_dim

    @property
    def num_full_layers(self) -> int:
        """Layers attending to the whole context (their KV grows with it)."""
        return self.num_layers - self.num_sliding_layers

    @property
    def active_params(self) -> float:
        """Parameters used per token: all but the experts, plus the routed share of the experts."""
        if not self.num_experts:
            return float(self.num_params)
        return self.num_params - self.expert_params + self.expert_params * self.experts_per_token / self.num_experts


@dataclass(frozen=True)
class Commitment:
    """A 1- or 3-year commitment price, per instance-hour; `range` equals (price, price) when quoted."""

    term_years: int
    usd_per_hour: float
    range_usd_per_hour: tuple[float, float]
    derived: bool  # from a discount range, not a quoted price


@dataclass(frozen=True)
class Purchase:
    """A device bought outright: its price spread evenly over its lifetime, plus its power."""

    price_usd: float
    lifetime_years: float
    usd_per_kwh: float
    power_w: float  # the device's peak_w: power at its highest mode, around the clock

    @property
    def usd_per_hour(self) -> float:
        return self.price_usd / (self.lifetime_years * HOURS_PER_YEAR) + self.power_w / 1000.0 * self.usd_per_kwh


@dataclass(frozen=True)
class PriceOffer:
    """One instance type of one provider in one region. Prices are per instance-hour; the
    `*_per_device_hour` helpers divide by devices_per_instance."""

    provider: str
    region: str
    instance: str
    device: str
    devices_per_instance: float
    on_demand_usd_per_hour: float  # for a purchase: the effective (amortised + power) rate
    spot_range_usd_per_hour: tuple[float, float] | None
    commitments: dict[int, Commitment] = field(hash=False)  # term in years -> commitment
    purchase: Purchase | None
    quoted_usd_per_device_hour: float | None
    sources: dict = field(hash=False, compare=False, repr=False)

    @property
    def spot_usd_per_hour(self) -> float | None:
        """The typical spot price: the midpoint of the observed range."""
        r = self.spot_range_usd_per_hour
        return None if r is None else (r[0] + r[1]) / 2.0

    def per_device(self, usd_per_instance_hour: float) -> float:
        return usd_per_instance_hour / self.devices_per_instance

    @property
    def on_demand_usd_per_device_hour(self) -> float:
        return self.per_device(self.on_demand_usd_per_hour)




def compute_format_for(device: DeviceSpec, weight_format: str) -> str | None:
    """The format the matmuls run in for `weight_format` on `device`, or None if it cannot."""
    peaks = device.peak_flops
    if weight_format == "nvfp4":
        # needs FP4 tensor cores (NVIDIA Blackwell): no dequantising kernel stands in for it
        return "fp4" if "fp4" in peaks and device.kind in ("gpu", "edge") else None
    if weight_format == "mxfp4":
        if "fp4" in peaks:
            return "fp4"
        # elsewhere weight-only (vLLM's Marlin / Triton MXFP4 MoE kernels on Hopper and Ampere):
        # dequantised to 16 bits before the matmul, so a GPU with a 16-bit peak only
        weight_format = "bf16" if device.kind == "gpu" else ""
    if weight_format in ("int8", "int4"):
        weight_format = "bf16"  # weight-only quantisation: dequantised to 16-bit before the matmul
    if weight_format in peaks:
        return weight_format
    if weight_format in ("bf16", "fp16"):
        other = "fp16" if weight_format == "bf16" else "bf16"
        if other in peaks:
            return other
        # a CPU with fp32 units only (Graviton) converts 16-bit weights and computes in fp32
        return "fp32" if "fp32" in peaks else None
    return None


# 4-bit floats carry their block scales: nvfp4 one fp8 byte per 16 weights, mxfp4 one byte per 32
BYTES_PER_ELEMENT = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5,
                     "nvfp4": 0.5 + 1.0 / 16, "mxfp4": 0.5 + 1.0 / 32}


def format_refusal(device: DeviceSpec, fmt: str, what: str = "weights") -> str | None:
    """Why `device` cannot run `fmt` weights (or, what="KV cache", keep its KV in `fmt`), in one
    phrase; None when it can."""
    if what == "KV cache":
        # stored in fp8 and widened inside the attention kernel: vLLM's CUDA/ROCm kernels do so on any
        # GPU (Ampere included); elsewhere the device needs fp8 support of its own
        if fmt == "fp8" and "fp8" not in device.peak_flops and device.kind not in ("gpu", "edge"):
            return (f"an fp8 KV cache needs fp8 support (NVIDIA Hopper, Ada or Blackwell, AMD MI300 or later, "
                    f"TPU7x) or a GPU's attention kernels to widen it; {device.key} has neither")
        return None
    if compute_format_for(device, fmt) is not None:
        return None
    if fmt == "nvfp4":
        return f"nvfp4 weights need FP4 tensor cores (NVIDIA Blackwell); {device.key} has none"
    if fmt == "mxfp4":
        return f"mxfp4 weights need FP4 units or a GPU with a 16-bit peak to dequantise on; {device.key} has neither"
    if fmt == "fp8":
        return f"fp8 weights need fp8 compute (NVIDIA Hopper, Ada or Blackwell, AMD MI300 or later); {device.key} has none"
    return f"{fmt} weights need {fmt} compute, which {device.key} lacks"
