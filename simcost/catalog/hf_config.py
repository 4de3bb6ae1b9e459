"""A models.yaml entry from a Hugging Face `config.json` (a local file; nothing is downloaded).

Covered: decoder-only transformers in the Llama layout and its relatives (Mistral, Qwen2/2.5,
Qwen3, Phi-3, gpt-oss, Gemma 3, Llama 4, DeepSeek-V2/V3): dense or grouped-query attention,
head_dim given or hidden / heads, optional attention and q/k/v biases, per-head q/k norms (Qwen3,
Gemma 3), attention sinks (gpt-oss), multi-head latent attention (kv_lora_rank, q_lora_rank:
DeepSeek), a gated MLP or a mixture of experts (num_local_experts / num_experts /
n_routed_experts, num_experts_per_tok, moe_intermediate_size, dense layers between sparse ones:
decoder_sparse_step, interleave_moe_layer_step, mlp_only_layers, first_k_dense_replace; shared
experts: n_shared_experts, shared_expert_intermediate_size, Llama 4's one shared expert), tied or
untied embeddings, sliding-window layers (layer_types, sliding_window_pattern, max_window_layers)
and Llama 4's chunked attention (attention_chunk_size on its RoPE layers), and the checkpoint's
quantisation where the catalog has the format (fp8, mxfp4).

Multimodal checkpoints of Gemma 3 and Llama 4 (text_config) import their language model; the
vision tower is not counted (the entry's notes say so). Other multimodal configs and other layouts
(BLOOM, GPT-2) are refused with the field that shows it.

`num_params` is the exact count of the checkpoint's tensors derived from the shapes; the tests
require it to equal the bundled models' published counts.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

from simcost.errors import InputError

__all__ = ["read_config", "model_entry", "param_counts", "entry_from_file"]

_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
# model types whose config class unties the lm_head unless told (transformers' defaults)
_UNTIED_BY_DEFAULT = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "gpt_oss",
                      "llama4_text"}
_TIED_BY_DEFAULT = {"gemma3_text"}
_QKV_BIAS = {"qwen2", "qwen2_moe"}  # q/k/v projections always carry biases
_QK_NORM = {"qwen3", "qwen3_moe", "gemma3_text"}  # an RMSNorm of head_dim on each head's q and k
_FOUR_NORMS = {"gemma3_text"}  # norms before and after both attention and the MLP
_EXPERT_BIAS = {"gpt_oss"}  # expert projections and the router carry biases; attention has sinks
_SHARED_EXPERT = {"llama4_text"}  # one always-used expert of the routed experts' size
_MULTIMODAL = {"gemma3", "llama4"}  # wrappers whose text_config this module imports
_REFUSED = {"text_config": "a multimodal checkpoint: its vision tower is not counted; import a text-only config"}
_LAYOUTS = _UNTIED_BY_DEFAULT | _TIED_BY_DEFAULT | {"deepseek"}  # layouts whose tensors this module knows
_QUANTISED = {"fp8": "fp8", "mxfp4": "mxfp4"}  # quant_method -> catalog weight format
SLIDING_NOTE = ("the KV cache keeps at most the window per sequence in sliding-window (chunked) layers; the step "
                "model reads their KV as full attention")
VISION_NOTE = "language model only: the checkpoint's vision tower is not counted"


def read_config(path: Path) -> dict:
    """The parsed config.json at `path`; InputError naming the file if unreadable."""
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InputError(str(path), f"cannot read config.json ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}", f"not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise InputError(str(path), "expected a JSON object (a Hugging Face config.json)")
    return raw


class _Config:
    """Typed reads of config.json fields, each error naming the file and field."""

    def __init__(self, raw: dict, label: str):
        self.raw, self.label = raw, label

    def fail(self, name: str, problem: str) -> InputError:
        return InputError(f"{self.label}: {name}", problem)

    def integer(self, *names: str, default: int | None = None, low: int = 1) -> int:
        for name in names:
            value = self.raw.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise self.fail(name, f"{value!r}; expected a whole number >= {low}")
            return value
        if default is None:
            raise self.fail(names[0], "missing")
        return default

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"{value!r}; expected true or false")
        return value


def param_counts(raw: dict, label: str = "config.json") -> tuple[int, int]:
    """(all parameters, parameters of the routed experts) of the checkpoint `raw` describes."""
    c = _Config(_text_model(raw), label)
    kind = _model_type(c)
    shape = _shape(c)
    d, layers = shape["hidden_size"], shape["num_layers"]
    q_dim, kv_dim = shape["num_heads"] * shape["head_dim"], shape["num_kv_heads"] * shape["head_dim"]
    attention = _mla_params(c, d, shape["num_heads"]) if _mla(c) else 2 * d * q_dim + 2 * d * kv_dim
    if c.flag("attention_bias", kind in _EXPERT_BIAS):
        attention += q_dim + 2 * kv_dim + d  # q, k, v and o biases
    elif kind in _QKV_BIAS:
        attention += q_dim + 2 * kv_dim
    if kind in _QK_NORM:
        attention += 2 * shape["head_dim"]
    if kind in _EXPERT_BIAS:
        attention += shape["num_heads"]  # one attention sink per head
    moe = _moe(c, kind, d)
    dense_mlp = 3 * d * c.integer("intermediate_size_mlp", "intermediate_size")
    expert_params = 0
    mlp_total = 0
    for layer in range(layers):
        if moe is None or not moe["sparse"](layer):
            mlp_total += dense_mlp
            continue
        expert_params += moe["experts"] * moe["expert"]
        mlp_total += moe["experts"] * moe["expert"] + moe["router"] + moe["shared"]
    norms = (4 if kind in _FOUR_NORMS else 2) * d
    embeddings = shape["vocab_size"] * d * (1 if _tied(c, kind) else 2)
    total = embeddings + layers * (attention + norms) + mlp_total + d  # + the final norm
    return total, expert_params


def _text_model(raw: dict) -> dict:
    """The language model of a Gemma 3 / Llama 4 multimodal config (its text_config, with the
    wrapper's dtype and name), else `raw` itself."""
    inner = raw.get("text_config")
    if raw.get("model_type") not in _MULTIMODAL or not isinstance(inner, dict):
        return raw
    outer = {k: raw[k] for k in ("_name_or_path", "torch_dtype", "dtype", "tie_word_embeddings", "quantization_config")
             if k in raw}
    return {**outer, **inner, "_vision_tower": True}


def _mla(c: _Config) -> bool:
    return c.raw.get("kv_lora_rank") is not None


def _mla_params(c: _Config, d: int, heads: int) -> int:
    """Multi-head latent attention: q through a low-rank q_lora_rank (with its norm) or directly;
    k and v from one latent of kv_lora_rank (with its norm) plus a shared rotary key."""
    latent, rope = c.integer("kv_lora_rank"), c.integer("qk_rope_head_dim")
    nope, v = c.integer("qk_nope_head_dim"), c.integer("v_head_dim")
    q_head = nope + rope
    q_rank = c.raw.get("q_lora_rank")
    q = d * heads * q_head if q_rank is None else d * c.integer("q_lora_rank") + q_rank + q_rank * heads * q_head
    kv = d * (latent + rope) + latent + latent * heads * (nope + v)
    return q + kv + heads * v * d


def _model_type(c: _Config) -> str:
    for name, why in _REFUSED.items():
        if name in c.raw and c.raw[name] is not None:
            raise c.fail(name, why)
    kind = c.raw.get("model_type")
    if not isinstance(kind, str):
        raise c.fail("model_type", "missing; expected e.g. llama, mistral, mixtral, qwen2, qwen3, qwen3_moe, phi3, "
                     "gpt_oss, gemma3, llama4, deepseek_v3")
    kind = "deepseek" if kind.startswith("deepseek") else kind
    if kind not in _LAYOUTS:
        raise c.fail("model_type", f"'{kind}' has a layout simcost does not count (known: {', '.join(sorted(_LAYOUTS))})")
    return kind


def _shape(c: _Config) -> dict[str, int]:
    d = c.integer("hidden_size")
    heads = c.integer("num_attention_heads")
    kv_heads = c.integer("num_key_value_heads", default=heads)
    if heads % kv_heads:
        raise c.fail("num_key_value_heads", f"{kv_heads} does not divide num_attention_heads={heads}")
    if c.raw.get("head_dim") is None and d % heads:
        raise c.fail("head_dim", f"missing, and hidden_size={d} is not a multiple of num_attention_heads={heads}")
    return {"hidden_size": d, "num_layers": c.integer("num_hidden_layers"), "num_heads": heads,
            "num_kv_heads": kv_heads, "head_dim": c.integer("head_dim", default=d // heads),
            "vocab_size": c.integer("vocab_size")}


def _tied(c: _Config, kind: str) -> bool:
    if "tie_word_embeddings" not in c.raw and kind not in _UNTIED_BY_DEFAULT | _TIED_BY_DEFAULT:
        raise c.fail("tie_word_embeddings", "missing; say whether the lm_head shares the embeddings")
    return c.flag("tie_word_embeddings", kind in _TIED_BY_DEFAULT)


def _moe(c: _Config, kind: str, d: int) -> dict | None:
    """Per sparse layer: routed experts n, parameters of one expert, router, shared experts; and
    which layers are sparse. None for a dense model."""
    names = [n for n in ("num_local_experts", "num_experts", "n_routed_experts") if c.raw.get(n)]
    if not names:
        return None
    experts = c.integer(names[0])
    c.integer("num_experts_per_tok")
    inner = c.integer("moe_intermediate_size", default=c.integer("intermediate_size"))
    expert = 3 * d * inner + ((2 * inner + d) if kind in _EXPERT_BIAS else 0)
    # gpt-oss: router bias; DeepSeek-V3: a per-expert bias steering the top-k choice (noaux_tc)
    router = d * experts + (experts if kind in _EXPERT_BIAS or c.raw.get("topk_method") == "noaux_tc" else 0)
    shared = 0
    if kind in _SHARED_EXPERT:
        shared = 3 * d * inner
    elif c.raw.get("n_shared_experts"):
        shared = c.integer("n_shared_experts") * 3 * d * inner
    elif c.raw.get("shared_expert_intermediate_size"):
        shared = 3 * d * c.integer("shared_expert_intermediate_size") + d  # plus its sigmoid gate
    step = c.integer("decoder_sparse_step", "interleave_moe_layer_step", default=1)
    first_sparse = c.integer("first_k_dense_replace", default=0, low=0)
    dense_only = c.raw.get("mlp_only_layers") or []
    if not isinstance(dense_only, list) or not all(isinstance(i, int) for i in dense_only):
        raise c.fail("mlp_only_layers", f"{dense_only!r}; expected a list of layer indices")

    def sparse(layer: int) -> bool:
        return layer >= first_sparse and layer not in dense_only and (layer + 1) % step == 0

    return {"experts": experts, "expert": expert, "router": router, "shared": shared, "sparse": sparse,
            "num_shared": (1 if kind in _SHARED_EXPERT else c.integer("n_shared_experts", default=0, low=0)),
            "first_dense": first_sparse}


def _sliding(c: _Config, num_layers: int, context: int) -> tuple[int, int]:
    """(window in tokens, layers using it); (0, 0) when no layer attends locally."""
    if c.raw.get("attention_chunk_size"):  # Llama 4: RoPE layers attend within chunks, NoPE layers globally
        chunk = c.integer("attention_chunk_size")
        rope_layers = c.raw.get("no_rope_layers")
        if isinstance(rope_layers, list) and len(rope_layers) == num_layers:
            chunked = sum(1 for r in rope_layers if r)
        else:
            interval = c.integer("no_rope_layer_interval", default=4)
            chunked = sum(1 for i in range(num_layers) if (i + 1) % interval)
        return (chunk, chunked) if chunk < context else (0, 0)
    window = c.raw.get("sliding_window")
    if not window or c.raw.get("use_sliding_window") is False:
        return 0, 0
    window = c.integer("sliding_window")
    if window >= context:
        return 0, 0  # a window as long as the context restricts nothing
    types = c.raw.get("layer_types")
    if isinstance(types, list) and len(types) == num_layers:
        return window, sum(t == "sliding_attention" for t in types)
    pattern = c.raw.get("sliding_window_pattern")
    if isinstance(pattern, int) and pattern > 0:  # Gemma 3: every pattern-th layer global, the rest local
        return window, sum(1 for i in range(num_layers) if (i + 1) % pattern)
    max_window_layers = c.raw.get("max_window_layers")
    if isinstance(max_window_layers, int) and "use_sliding_window" in c.raw:
        return window, min(max_window_layers, num_layers)
    return window, num_layers  # Mistral v0.1: every layer


def model_entry(raw: dict, label: str, source: str, date: str) -> dict:
    """The models.yaml entry of config `raw`; `label` names it in errors."""
    total, expert_params = param_counts(raw, label)
    raw = _text_model(raw)
    c = _Config(raw, label)
    kind = _model_type(c)
    shape = _shape(c)
    dtype = raw.get("torch_dtype") or raw.get("dtype")
    if dtype not in _DTYPES:
        raise c.fail("torch_dtype", f"{dtype!r}; expected one of {', '.join(_DTYPES)}")
    context = c.integer("max_position_embeddings")
    entry: dict[str, Any] = {"name": str(raw.get("_name_or_path") or label), **shape}
    moe = _moe(c, kind, shape["hidden_size"])
    entry["intermediate_size"] = (c.integer("moe_intermediate_size", default=c.integer("intermediate_size"))
                                  if moe else c.integer("intermediate_size"))
    entry["num_params"] = total
    if moe:
        entry.update(num_experts=moe["experts"], experts_per_token=c.integer("num_experts_per_tok"),
                     expert_params=expert_params)
        if moe["num_shared"]:
            entry["num_shared_experts"] = moe["num_shared"]
        if moe["first_dense"]:
            entry["first_dense_layers"] = moe["first_dense"]
    if _mla(c):  # entered absorbed (simcost.catalog.types.ModelSpec): one latent "head" of half the cached width
        latent, rope = c.integer("kv_lora_rank"), c.integer("qk_rope_head_dim")
        if (latent + rope) % 2:
            raise c.fail("kv_lora_rank", f"kv_lora_rank + qk_rope_head_dim = {latent + rope} is odd; simcost "
                         f"enters the latent as K and V halves")
        entry.update(num_kv_heads=1, head_dim=(latent + rope) // 2, kv_lora_rank=latent, qk_rope_head_dim=rope)
    notes = []
    if raw.get("_vision_tower"):
        notes.append(VISION_NOTE)
    entry["weight_format"] = _DTYPES[dtype]
    quant = raw.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method") in _QUANTISED:
        entry["weight_format"] = _QUANTISED[quant["quant_method"]]
        notes.append(f"weights as the checkpoint ships them, {entry['weight_format']} (its "
                     f"{_DTYPES[dtype]} tensors, e.g. embeddings, norms, counted at that format too)")
    elif isinstance(quant, dict) and quant.get("quant_method"):
        notes.append(f"checkpoint quantised with {quant['quant_method']}; listed as its unquantised "
                     f"{_DTYPES[dtype]} (the catalog has no such weight format)")
    entry["max_model_len"] = context
    window, local_layers = _sliding(c, shape["num_layers"], context)
    if window:
        entry.update(sliding_window=window, num_sliding_layers=local_layers)
        notes.append(SLIDING_NOTE)
    if notes:
        entry["notes"] = "; ".join(notes)
    entry["sources"] = {"spec": {"source": source, "date": date}}
    return entry


def entry_from_file(path: Path, key: str | None = None) -> tuple[str, dict]:
    """(catalog key, models.yaml entry) of the config.json at `path`."""
    path = Path(path)
    raw = read_config(path)
    date = datetime.date.fromtimestamp(path.stat().st_mtime).isoformat()
    given = raw.get("_name_or_path")
    name = given if isinstance(given, str) and given else path.resolve().parent.name
    source = (f"Hugging Face config.json {path.resolve()} ({name}); num_params derived by simcost from its "
              f"shapes; date: the file's modification date")
    entry = model_entry(raw, str(path), source, date)
    entry["name"] = name
    return key or _key(name), entry


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.rsplit("/", 1)[-1].lower()).strip("-") or "imported-model"
