"""A models.yaml entry from a Hugging Face `config.json` (a local file; nothing is downloaded).

Covered: decoder-only transformers in the Llama layout and its relatives (Mistral, Qwen2/2.5,
Qwen3, Phi-3, gpt-oss): dense or grouped-query attention, head_dim given or hidden / heads,
optional attention and q/k/v biases, per-head q/k norms (Qwen3), attention sinks (gpt-oss), a
gated MLP or a mixture of experts (num_local_experts / num_experts, num_experts_per_tok,
moe_intermediate_size, dense layers between sparse ones, shared experts: n_shared_experts or
shared_expert_intermediate_size), tied or untied embeddings, and sliding-window layers (recorded
in the entry; the step model counts their KV as full attention).

Not covered, refused with the field that shows it: multi-head latent attention (DeepSeek-V2/V3,
kv_lora_rank), multimodal checkpoints (text_config; their vision tower is not counted), and
other layouts (BLOOM, GPT-2, Gemma's scaled embeddings and four norms per layer).

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
_UNTIED_BY_DEFAULT = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "gpt_oss"}
_QKV_BIAS = {"qwen2", "qwen2_moe"}  # q/k/v projections always carry biases
_QK_NORM = {"qwen3", "qwen3_moe"}  # an RMSNorm of head_dim on each head's q and k
_EXPERT_BIAS = {"gpt_oss"}  # expert projections and the router carry biases; attention has sinks
_REFUSED = {"kv_lora_rank": "multi-head latent attention (DeepSeek-V2/V3) is not modelled by the step model",
            "text_config": "a multimodal checkpoint: its vision tower is not counted; import a text-only config",
            "interleave_moe_layer_step": "interleaved MoE layers (Llama 4) are not modelled by the step model"}
_LAYOUTS = _UNTIED_BY_DEFAULT | {"deepseek"}  # layouts whose tensors this module knows
SLIDING_NOTE = ("KV of sliding-window layers is counted as full attention: the step model does not model "
                "sliding windows yet")


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
    c = _Config(raw, label)
    kind = _model_type(c)
    shape = _shape(c)
    d, layers = shape["hidden_size"], shape["num_layers"]
    q_dim, kv_dim = shape["num_heads"] * shape["head_dim"], shape["num_kv_heads"] * shape["head_dim"]
    attention = 2 * d * q_dim + 2 * d * kv_dim
    if c.flag("attention_bias", kind in _EXPERT_BIAS):
        attention += q_dim + 2 * kv_dim + d  # q, k, v and o biases
    elif kind in _QKV_BIAS:
        attention += q_dim + 2 * kv_dim
    if kind in _QK_NORM:
        attention += 2 * shape["head_dim"]
    if kind in _EXPERT_BIAS:
        attention += shape["num_heads"]  # one attention sink per head
    moe = _moe(c, kind, d)
    dense_mlp = 3 * d * c.integer("intermediate_size")
    expert_params = 0
    mlp_total = 0
    for layer in range(layers):
        if moe is None or not moe["sparse"](layer):
            mlp_total += dense_mlp
            continue
        expert_params += moe["experts"] * moe["expert"]
        mlp_total += moe["experts"] * moe["expert"] + moe["router"] + moe["shared"]
    norms = 2 * d
    embeddings = shape["vocab_size"] * d * (1 if _tied(c, kind) else 2)
    total = embeddings + layers * (attention + norms) + mlp_total + d  # + the final norm
    return total, expert_params


def _model_type(c: _Config) -> str:
    for name, why in _REFUSED.items():
        if name in c.raw and c.raw[name] is not None:
            raise c.fail(name, why)
    kind = c.raw.get("model_type")
    if not isinstance(kind, str):
        raise c.fail("model_type", "missing; expected e.g. llama, mistral, mixtral, qwen2, qwen3, qwen3_moe, phi3, gpt_oss")
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
    if "tie_word_embeddings" not in c.raw and kind not in _UNTIED_BY_DEFAULT:
        raise c.fail("tie_word_embeddings", "missing; say whether the lm_head shares the embeddings")
    return c.flag("tie_word_embeddings", False)


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
    router = d * experts + (experts if kind in _EXPERT_BIAS else 0)
    shared = 0
    if c.raw.get("n_shared_experts"):
        shared = c.integer("n_shared_experts") * 3 * d * inner
    elif c.raw.get("shared_expert_intermediate_size"):
        shared = 3 * d * c.integer("shared_expert_intermediate_size") + d  # plus its sigmoid gate
    step = c.integer("decoder_sparse_step", default=1)
    first_sparse = c.integer("first_k_dense_replace", default=0, low=0)
    dense_only = c.raw.get("mlp_only_layers") or []
    if not isinstance(dense_only, list) or not all(isinstance(i, int) for i in dense_only):
        raise c.fail("mlp_only_layers", f"{dense_only!r}; expected a list of layer indices")

    def sparse(layer: int) -> bool:
        return layer >= first_sparse and layer not in dense_only and (layer + 1) % step == 0

    return {"experts": experts, "expert": expert, "router": router, "shared": shared, "sparse": sparse}


def _sliding(c: _Config, num_layers: int, context: int) -> tuple[int, int]:
    """(window in tokens, layers using it); (0, 0) when no layer attends locally."""
    window = c.raw.get("sliding_window")
    if not window or c.raw.get("use_sliding_window") is False:
        return 0, 0
    window = c.integer("sliding_window")
    if window >= context:
        return 0, 0  # a window as long as the context restricts nothing
    types = c.raw.get("layer_types")
    if isinstance(types, list) and len(types) == num_layers:
        return window, sum(t == "sliding_attention" for t in types)
    max_window_layers = c.raw.get("max_window_layers")
    if isinstance(max_window_layers, int) and "use_sliding_window" in c.raw:
        return window, min(max_window_layers, num_layers)
    return window, num_layers  # Mistral v0.1: every layer


def model_entry(raw: dict, label: str, source: str, date: str) -> dict:
    """The models.yaml entry of config `raw`; `label` names it in errors."""
    c = _Config(raw, label)
    total, expert_params = param_counts(raw, label)
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
    notes = []
    entry["weight_format"] = _DTYPES[dtype]
    quant = raw.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method"):
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
