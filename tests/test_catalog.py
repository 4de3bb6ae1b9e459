"""Device, model and price catalogs: every entry loads, carries dated sources, prices are
consistent with each other, a scenario picks its provider's price, and bad entries are reported
with the file and key path."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from simcost.catalog.specs import config_dir, get_device, get_model, load_devices, load_models, load_prices, price_offer
from simcost.catalog.types import DEVICE_SOURCE_GROUPS, MODEL_SOURCE_GROUPS
from simcost.errors import InputError
from simcost.perf.deployment import plan_deployment
from simcost.scenario.scenario import scenario_from_dict

DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")


def test_catalogs_load_with_required_keys():
    devices, models = load_devices(), load_models()
    assert {"h100-sxm", "h200", "a100-80gb", "a100-80gb-pcie", "l40s", "l4", "a10g", "t4", "mi300x", "tpu-v5e",
            "tpu-v6e", "xeon-8480", "graviton3", "graviton4", "jetson-agx-orin", "jetson-orin-nano",
            "jetson-orin-nano-super"} <= set(devices)
    assert {"llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-2-7b", "llama-2-13b", "llama-2-70b",
            "mistral-7b", "mixtral-8x7b", "qwen2.5-7b", "qwen2.5-72b", "bert-base", "resnet-50"} <= set(models)
    assert all(key == spec.key for key, spec in devices.items())
    assert {d.kind for d in devices.values()} == {"gpu", "cpu", "tpu", "edge"}


@pytest.mark.parametrize("key", sorted(load_devices()))
def test_every_device_value_group_has_a_dated_source(key):
    device = load_devices()[key]
    sources = device.sources
    groups = DEVICE_SOURCE_GROUPS + (("shapes",) if device.rentable_shapes else ())  # TPU slices cite theirs
    groups += ("interconnect",) if device.interconnect else ()  # so does a tensor-parallel fabric
    assert set(sources) == set(groups)
    for group in groups:
        assert sources[group]["source"].strip()
        assert DATE.match(sources[group]["date"])


@pytest.mark.parametrize("key", sorted(load_models()))
def test_every_model_has_a_dated_source(key):
    sources = load_models()[key].sources
    for group in MODEL_SOURCE_GROUPS:
        assert sources[group]["source"].strip()
        assert DATE.match(sources[group]["date"])


@pytest.mark.parametrize("key", sorted(k for k, m in load_models().items() if m.sliding_window))
def test_sliding_window_models_cite_it_and_say_how_kv_is_counted(key):
    m = load_models()[key]
    assert "sliding_window" in m.sources["spec"]["source"] or "attention_chunk_size" in m.sources["spec"]["source"]
    assert "keeps at most" in m.notes and "reads their KV as full attention" in m.notes


def test_device_units_are_converted_to_si():
    h100 = get_device("h100-sxm")
    assert h100.memory_bytes == 80 * 2**30  # the "80GB" HBM is 80 GiB
    assert h100.mem_bw_bytes_per_s == 3350e9
    assert h100.peak_flops["bf16"] == 989e12 and h100.peak_flops["fp8"] == 1979e12
    assert h100.link_bytes_per_s == 450e9  # NVLink 900 GB/s bidirectional, one direction
    assert h100.price_usd_per_hour == pytest.approx(55.04 / 8)
    a100 = get_device("a100-80gb")
    assert "fp8" not in a100.peak_flops
    assert a100.price_usd_per_hour == pytest.approx(27.447 / 8)
    assert get_device("xeon-8480").price_usd_per_hour == pytest.approx(14 * 0.383)
    assert get_device("l4").memory_bytes == 24e9


@pytest.mark.parametrize("key", sorted(load_devices()))
def test_device_values_are_physically_sane(key):
    d = load_devices()[key]
    assert 0 <= d.idle_w < d.peak_w
    assert 0 < d.mfu <= 1 and 0 < d.mbu <= 1
    assert d.peak_flops and all(v > 0 for v in d.peak_flops.values())


QKV_BIAS_MODELS = {"qwen2.5-7b", "qwen2.5-72b"}  # Qwen2 has q/k/v projection biases
BLOOM_MODELS = {"bloom-176b"}  # a different layout: see test_bloom_param_count_matches_its_shapes


# The Llama-layout models this hand formula was written for; every transformer (these and the newer
# ones: tied embeddings, q/k norms, biases, wider attention than hidden_size) is also checked against
# its config.json in tests/test_hf_config.py.
LLAMA_LAYOUT = {"llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.3-70b", "llama-2-7b", "llama-2-13b",
                "llama-2-70b", "mistral-7b", "mixtral-8x7b", "qwen2.5-7b", "qwen2.5-72b"}


@pytest.mark.parametrize("key", sorted(LLAMA_LAYOUT))
def test_model_param_count_matches_its_shapes(key):
    # Llama/Mistral/Qwen2 layout: embeddings and an untied lm_head, per layer q, k, v, o, gate/up/down
    # (once per expert, plus a router, for a mixture of experts) and two RMSNorm weights, plus a
    # final norm.
    m = load_models()[key]
    d, kv = m.hidden_size, m.num_kv_heads * m.head_dim
    mlp = 3 * d * m.intermediate_size
    experts = max(m.num_experts, 1)
    router = d * m.num_experts
    bias = d + 2 * kv if key in QKV_BIAS_MODELS else 0
    per_layer = d * d * 2 + d * kv * 2 + bias + experts * mlp + router + 2 * d
    assert m.num_params == 2 * m.vocab_size * d + m.num_layers * per_layer + d
    assert m.expert_params == (m.num_layers * experts * mlp if m.num_experts else 0)
    assert m.num_heads * m.head_dim == d


def test_bloom_param_count_matches_its_shapes():
    # BLOOM: embeddings tied with the lm_head plus a LayerNorm on them; per layer fused qkv and
    # dense (with biases), a two-matrix GELU MLP of 4 d (with biases) and two LayerNorms (weight and
    # bias); a final LayerNorm. The model card's count is 176,247,271,424.
    m = load_models()["bloom-176b"]
    d = m.hidden_size
    assert m.intermediate_size == 4 * d and m.num_kv_heads == m.num_heads  # multi-head attention
    per_layer = (3 * d * d + 3 * d) + (d * d + d) + (2 * d * m.intermediate_size + m.intermediate_size + d) + 4 * d
    assert m.num_params == m.vocab_size * d + 2 * d + m.num_layers * per_layer + 2 * d == 176_247_271_424


def test_aliases_name_the_same_entry_and_must_be_unique(tmp_path):
    # Measurement files spell names their own way (Splitwise: "h100-80gb", "llama2-70b").
    assert get_device("h100-80gb") is get_device("h100-sxm")
    assert get_model("bloom").key == "bloom-176b"

    def clash(raw):
        raw["a100-80gb"]["aliases"] = ["h100-80gb"]
    with pytest.raises(InputError, match="h100-80gb.*already names h100-sxm"):
        load_devices(_broken_copy(tmp_path, "devices.yaml", clash))

    def not_a_list(raw):
        raw["bloom-176b"]["aliases"] = "bloom"
    (tmp_path / "m").mkdir()
    with pytest.raises(InputError, match="models.yaml: bloom-176b.aliases"):
        load_models(_broken_copy(tmp_path / "m", "models.yaml", not_a_list))


def test_known_exact_parameter_counts():
    assert get_model("llama-3.1-8b").num_params == 8_030_261_248
    assert get_model("llama-2-70b").num_params == 68_976_648_192
    assert get_model("llama-2-70b").max_model_len == 4096
    assert get_model("llama-3.1-8b").max_model_len == 131072


def test_unknown_names_suggest_the_closest():
    with pytest.raises(InputError) as err:
        get_device("h100")
    assert err.value.where == "hardware.device" and "h100-sxm" in str(err.value)
    with pytest.raises(InputError) as err:
        get_model("llama-3-8b")
    assert err.value.where == "model.name" and "llama-3.1-8b" in str(err.value)


def test_config_dir_is_the_repository_configs():
    assert (config_dir() / "devices.yaml").is_file()
    assert (config_dir() / "models.yaml").is_file()


def _broken_copy(tmp_path: Path, file: str, edit) -> Path:
    for name in ("devices.yaml", "models.yaml", "prices.yaml"):
        shutil.copy(config_dir() / name, tmp_path / name)
    raw = yaml.safe_load((tmp_path / file).read_text())
    edit(raw)
    (tmp_path / file).write_text(yaml.safe_dump(raw, sort_keys=False))
    return tmp_path


def test_missing_field_names_file_and_key_path(tmp_path):
    folder = _broken_copy(tmp_path, "devices.yaml", lambda raw: raw["h100-sxm"].pop("mem_bw_gb_per_s"))
    with pytest.raises(InputError, match=r"^devices\.yaml: h100-sxm\.mem_bw_gb_per_s: missing"):
        load_devices(folder)


def test_wrong_type_is_refused(tmp_path):
    folder = _broken_copy(tmp_path, "devices.yaml", lambda raw: raw["l4"].__setitem__("peak_w", "72 W"))
    with pytest.raises(InputError, match=r"devices\.yaml: l4\.peak_w: '72 W'; expected a number"):
        load_devices(folder)


def test_missing_source_date_is_refused(tmp_path):
    folder = _broken_copy(tmp_path, "devices.yaml", lambda raw: raw["a100-80gb"]["sources"]["price"].pop("date"))
    with pytest.raises(InputError, match=r"devices\.yaml: a100-80gb\.sources\.price\.date: missing"):
        load_devices(folder)


def test_missing_source_group_is_refused(tmp_path):
    folder = _broken_copy(tmp_path, "models.yaml", lambda raw: raw["llama-2-70b"]["sources"].pop("spec"))
    with pytest.raises(InputError, match=r"models\.yaml: llama-2-70b\.sources\.spec: missing"):
        load_models(folder)


def test_unknown_field_is_refused_with_a_hint(tmp_path):
    folder = _broken_copy(tmp_path, "models.yaml", lambda raw: raw["llama-3.1-8b"].__setitem__("num_layer", 3))
    with pytest.raises(InputError, match=r"llama-3\.1-8b\.num_layer: unknown field \(closest: num_layers"):
        load_models(folder)


@pytest.mark.parametrize("table, header", [("devices", "bf16_TF"), ("models", "params_B")])
def test_catalog_command_lists_every_entry(capsys, table, header):
    from simcost.cli.main import main

    assert main(["catalog", table]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert header in lines[0]
    keys = load_models() if table == "models" else load_devices()
    assert [line.split()[0] for line in lines[1:]] == list(keys)


def test_catalog_command_lists_every_offer_with_spot_commitment_and_sources(capsys):
    from simcost.cli.main import main

    assert main(["catalog", "prices"]) == 0
    out = capsys.readouterr().out
    table, legend = out.split("\n\n", 1)
    lines, offers = table.splitlines()[1:], load_prices()
    assert len(lines) == len(offers)
    for line, o in zip(lines, offers):
        assert line.split()[:2] == [o.provider, o.region] and f" {o.instance} " in line and f" {o.device} " in line
    p5 = next(line for line in table.splitlines() if "p5.48xlarge" in line)
    # per device: on-demand 55.04 / 8, spot midpoint 21.7 / 8 with its range, 1 year 37.5 % off
    assert "6.88" in p5 and "2.713 (2.2-3.225)" in p5 and "4.3*" in p5
    assert "SkyPilot catalog v8 aws/vms.csv" in legend and "(2025-06)" in legend
    assert "249 USD / (3 y x 8760 h) + 25 W x 0.15 USD/kWh" in legend


def test_added_llama_parameter_counts():
    # Llama-2 7B/13B match their checkpoints' published counts; 405B is derived from its shapes.
    assert get_model("llama-2-7b").num_params == 6_738_415_616
    assert get_model("llama-2-13b").num_params == 13_015_864_320
    assert get_model("llama-3.1-405b").num_params == 405_853_388_800


# --- models: mixture of experts and per-item models ------------------------------------------

def test_mixture_of_experts_active_parameters_by_hand():
    m = get_model("mixtral-8x7b")
    expert_params = 32 * 8 * 3 * 4096 * 14336
    assert m.expert_params == expert_params
    assert m.active_params == m.num_params - expert_params + expert_params * 2 / 8 == 12_879_925_248
    assert m.active_params < m.num_params
    dense = get_model("llama-3.1-8b")
    assert (dense.num_experts, dense.experts_per_token, dense.expert_params) == (0, 0, 0)
    assert dense.active_params == dense.num_params


def test_qwen_parameter_counts_match_the_model_cards():
    # the cards print 7.61 B and 72.7 B (truncated); the shapes give 7,615,616,512 and 72,706,203,648
    assert 7.61e9 <= get_model("qwen2.5-7b").num_params < 7.62e9
    assert 72.7e9 <= get_model("qwen2.5-72b").num_params < 72.8e9


def test_bert_base_parameters_and_flops_per_item_by_hand():
    m = get_model("bert-base")
    assert m.serving == "per_item" and "128-token" in m.item_input
    d, n, L, ff = 768, 128, 12, 3072
    embeddings = (30522 + 512 + 2) * d + 2 * d
    layer = 4 * (d * d + d) + 2 * d + (d * ff + ff) + (ff * d + d) + 2 * d
    assert m.num_params == embeddings + L * layer + d * d + d == 109_482_240
    matmul_weights = L * (4 * d * d + 2 * d * ff)
    assert m.flops_per_item == 2 * matmul_weights * n + 4 * L * n * n * d + 2 * d * d


def test_resnet50_is_per_item_with_twice_the_multiply_adds():
    m = get_model("resnet-50")
    assert m.serving == "per_item" and "224x224" in m.item_input
    assert m.flops_per_item == 2 * 4.089e9 and m.num_params == 25_557_032
    assert m.num_layers == 0 and m.weight_format == "fp32"


def _set(key, name, value):
    return lambda raw: raw[key].__setitem__(name, value)


@pytest.mark.parametrize("edit, match", [
    (lambda raw: raw["mixtral-8x7b"].pop("expert_params"), r"mixtral-8x7b\.expert_params: missing; a mixture"),
    (_set("mixtral-8x7b", "experts_per_token", 9), r"mixtral-8x7b\.experts_per_token: 9 is above num_experts=8"),
    (_set("mixtral-8x7b", "expert_params", 10**12), r"mixtral-8x7b\.expert_params: 10+ is not below num_params"),
    (lambda raw: raw["resnet-50"].pop("flops_per_item"), r"resnet-50\.flops_per_item: missing"),
    (_set("resnet-50", "serving", "batch"), r"resnet-50\.serving: 'batch' is not one of tokens, per_item"),
    (_set("llama-2-7b", "flops_per_item", 1.0), r"llama-2-7b\.flops_per_item: unknown field"),
])
def test_malformed_model_entries_are_refused(tmp_path, edit, match):
    with pytest.raises(InputError, match=r"^models\.yaml: " + match):
        load_models(_broken_copy(tmp_path, "models.yaml", edit))


# --- prices ----------------------------------------------------------------------------------

def _offer_id(offer):
    return f"{offer.provider}/{offer.region}/{offer.instance}"


OFFERS = load_prices()


@pytest.mark.parametrize("offer", OFFERS, ids=_offer_id)
def test_every_price_has_a_dated_source_per_value_group(offer):
    expected = ({"purchase", "lifetime", "energy"} if offer.purchase else {"on_demand"})
    expected |= {"spot"} if offer.spot_range_usd_per_hour else set()
    expected |= {name for years, name in ((1, "one_year"), (3, "three_year")) if years in offer.commitments}
    assert set(offer.sources) == expected
    for group in expected:
        assert offer.sources[group]["source"].strip()
        assert DATE.match(offer.sources[group]["date"])
    for c in offer.commitments.values():  # derived values say so in their source
        assert not c.derived or "derived" in offer.sources["one_year" if c.term_years == 1 else "three_year"]["source"]


@pytest.mark.parametrize("offer", OFFERS, ids=_offer_id)
def test_discounted_prices_are_below_on_demand(offer):
    od = offer.on_demand_usd_per_hour
    if offer.spot_range_usd_per_hour:
        low, high = offer.spot_range_usd_per_hour
        assert 0 < low <= offer.spot_usd_per_hour <= high < od
        assert offer.spot_usd_per_hour == pytest.approx((low + high) / 2)
    for c in offer.commitments.values():
        assert c.range_usd_per_hour[0] <= c.usd_per_hour <= c.range_usd_per_hour[1] < od


def test_per_device_prices_times_devices_give_the_instance_price():
    quoted = [o for o in OFFERS if o.quoted_usd_per_device_hour is not None]
    assert len(quoted) >= 8
    for o in quoted:  # the source rounds per-device prices to the cent
        assert abs(o.quoted_usd_per_device_hour * o.devices_per_instance - o.on_demand_usd_per_hour) \
            <= 0.005 * o.devices_per_instance + 1e-9, _offer_id(o)
    for o in OFFERS:
        assert o.on_demand_usd_per_device_hour * o.devices_per_instance == pytest.approx(o.on_demand_usd_per_hour)


def test_reference_figures_reach_the_catalog():
    p5 = price_offer("h100-sxm", "aws", "us-east-1")
    assert (p5.instance, p5.devices_per_instance, p5.on_demand_usd_per_hour) == ("p5.48xlarge", 8, 55.04)
    assert p5.spot_range_usd_per_hour == (17.6, 25.8) and p5.spot_usd_per_hour == pytest.approx(21.7)
    one_year = p5.commitments[1]
    assert one_year.derived and one_year.usd_per_hour == pytest.approx(55.04 * 0.625)
    assert one_year.range_usd_per_hour == pytest.approx((55.04 * 0.60, 55.04 * 0.65))
    assert 3 not in p5.commitments  # no source for 3-year prices
    xeon = price_offer("xeon-8480", "aws", "us-east-1")
    assert xeon.devices_per_instance == pytest.approx(1 / 14)
    assert xeon.on_demand_usd_per_device_hour == pytest.approx(14 * 0.383)
    assert price_offer("tpu-v6e", "gcp", "europe-west4").on_demand_usd_per_hour == 2.97
    assert price_offer("a100-80gb", "coreweave", "us-east-1").region == "any"  # a provider-wide price


def test_edge_purchase_is_amortised_plus_power_by_hand():
    o = price_offer("jetson-orin-nano-super", "purchase", "us-east-1")
    hours = 3 * 8760
    usd_per_hour = 249 / hours + 25 / 1000 * 0.15  # the dev kit over 3 years + 25 W at 0.15 USD/kWh
    assert o.on_demand_usd_per_hour == pytest.approx(usd_per_hour, rel=1e-12)
    assert o.on_demand_usd_per_hour == pytest.approx(0.0132249, abs=1e-7)
    assert o.purchase.power_w == get_device("jetson-orin-nano-super").peak_w


@pytest.mark.parametrize("key", sorted(load_devices()))
def test_device_catalog_price_is_one_offer_of_the_price_catalog(key):
    device = load_devices()[key]
    offers = [o for o in OFFERS if o.device == key]
    if device.price_usd_per_hour is None:
        assert "price" in device.sources and device.sources["price"]["source"]
        return
    assert any(o.on_demand_usd_per_device_hour == pytest.approx(device.price_usd_per_hour, rel=1e-9)
               for o in offers), f"{key}: {device.price_usd_per_hour} is no offer of prices.yaml"


def _broken_prices(tmp_path: Path, edit) -> Path:
    return _broken_copy(tmp_path, "prices.yaml", edit)


def _p5(raw):
    return raw["aws"]["us-east-1"]["p5.48xlarge"]


def _set_p5(name, value):
    return lambda raw: _p5(raw).__setitem__(name, value)


@pytest.mark.parametrize("edit, key, problem", [
    (lambda raw: _p5(raw).pop("device"), "device", "missing"),
    (_set_p5("device", "h100"), "device", "unknown device 'h100' (closest: h200, h100-sxm"),
    (_set_p5("devices_per_instance", "eight"), "devices_per_instance", "'eight'; expected"),
    (_set_p5("devices_per_instance", 0), "devices_per_instance", "0; expected a number > 0"),
    (_set_p5("on_demand_usd_per_hour", "55"), "on_demand_usd_per_hour", "'55'; expected a number"),
    (lambda raw: _p5(raw).pop("on_demand_usd_per_hour"), "on_demand_usd_per_hour",
     "give on_demand_usd_per_hour or purchase"),
    (_set_p5("quoted_usd_per_device_hour", 7.5), "quoted_usd_per_device_hour", "by more than rounding"),
    (_set_p5("spot_usd_per_hour", [25.8, 17.6]), "spot_usd_per_hour", "low <= high"),
    (_set_p5("one_year", {"discount": [0.35, 1.2]}), "one_year.discount", "0 <= low <= high < 1"),
    (_set_p5("one_year", {"percent": 37}), "one_year", "expected {usd_per_hour: price}"),
    (lambda raw: _p5(raw)["sources"].pop("spot"), "sources.spot", "missing"),
    (lambda raw: _p5(raw)["sources"].__setitem__("spot", {"source": "AWS"}), "sources.spot.date", "missing"),
    (_set_p5("sources", {"on_demand": {"source": "x", "date": "2025-06"}}), "sources.spot", "missing"),
    (lambda raw: _p5(raw)["sources"].__setitem__("three_year", {"source": "x", "date": "2025-06"}),
     "sources.three_year", "unknown field"),
    (_set_p5("spot_price", 20), "spot_price", "unknown field (closest: sources, spot_usd_per_hour"),
])
def test_malformed_price_entries_name_file_and_key_in_one_line(tmp_path, edit, key, problem):
    folder = _broken_prices(tmp_path, edit)
    with pytest.raises(InputError) as err:
        load_prices(folder)
    message = str(err.value)
    assert message.startswith(f"prices.yaml: aws.us-east-1.p5.48xlarge.{key}: "), message
    assert problem in message and "\n" not in message


def test_malformed_purchase_names_its_key(tmp_path):
    def edit(raw):
        raw["purchase"]["any"]["jetson-orin-nano-super-devkit"]["purchase"].pop("lifetime_years")
    with pytest.raises(InputError, match=r"^prices\.yaml: purchase\.any\.jetson-orin-nano-super-devkit\.purchase\."
                                         r"lifetime_years: missing$"):
        load_prices(_broken_prices(tmp_path, edit))


# --- a scenario's price ----------------------------------------------------------------------

def _scenario(device="h100-sxm", model="llama-3.1-8b", tp=1, site=None, price=None):
    fleet = {"replicas": 1}
    if site is not None:
        fleet["site"] = site
    if price is not None:
        fleet["price_usd_per_device_hour"] = price
    return scenario_from_dict({
        "duration_s": 10.0,
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                     "input_tokens": {"dist": "fixed", "value": 128},
                     "output_tokens": {"dist": "fixed", "value": 16}},
        "model": {"name": model, "weight_format": "int4" if device.startswith("jetson") else None},
        "hardware": {"device": device, "tensor_parallel": tp},
        "engine": {"max_model_len": 4096},
        "fleet": fleet,
    })


def test_a_scenario_at_aws_pays_the_aws_price():
    dep = plan_deployment(_scenario(device="l40s", site={"provider": "aws"}))
    assert dep.price_usd_per_hour == pytest.approx(1.861 * dep.num_devices)  # g6e.xlarge, the first L40S offer
    dep = plan_deployment(_scenario(device="h100-sxm", model="llama-3.1-70b", tp=2, site={"provider": "aws"}))
    assert dep.price_usd_per_hour == pytest.approx(55.04 / 8 * dep.num_devices)


def test_provider_and_region_choose_the_offer():
    dep = plan_deployment(_scenario(device="tpu-v6e", site={"provider": "gcp", "region": "asia-northeast1"}))
    assert dep.price_usd_per_hour == pytest.approx(3.24 * dep.num_devices)
    dep = plan_deployment(_scenario(device="h100-sxm", site={"provider": "coreweave", "region": "us-east-1"}))
    assert dep.price_usd_per_hour == pytest.approx(4.25 * dep.num_devices)
    dep = plan_deployment(_scenario(device="jetson-orin-nano-super", model="llama-2-7b", site={"provider": "purchase"}))
    assert dep.price_usd_per_hour == pytest.approx(249 / (3 * 8760) + 0.025 * 0.15)


def test_without_a_provider_the_device_price_is_unchanged_and_an_explicit_price_wins():
    assert plan_deployment(_scenario()).price_usd_per_hour == pytest.approx(6.88)
    assert plan_deployment(_scenario(site={"region": "eu-west-1"})).price_usd_per_hour == pytest.approx(6.88)
    dep = plan_deployment(_scenario(site={"provider": "aws"}, price=2.0))
    assert dep.price_usd_per_hour == pytest.approx(2.0)


@pytest.mark.parametrize("site, device, where, words", [
    ({"provider": "azure"}, "h100-sxm", "fleet.site.provider", ["unknown provider 'azure'", "aws", "gcp"]),
    ({"provider": "gcp"}, "tpu-v6e", "fleet.site.region", ["gcp has no prices for region 'us-east-1'", "us-central1"]),
    ({"provider": "gcp", "region": "us-central1"}, "h100-sxm", "fleet.site.provider",
     ["no gcp price for device h100-sxm in region us-central1", "aws/us-east-1"]),
    ({"provider": "aws"}, "mi300x", "fleet.site.provider", ["no aws price for device mi300x in region us-east-1",
                                                            "no provider in prices.yaml prices it"]),
    (None, "mi300x", "fleet.price_usd_per_device_hour", ["mi300x has no price in devices.yaml"]),
    (None, "jetson-orin-nano-super", "fleet.price_usd_per_device_hour", ["purchase/any"]),
])
def test_a_missing_price_is_a_clear_error(site, device, where, words):
    model = "llama-2-7b" if device.startswith("jetson") else "llama-3.1-8b"
    with pytest.raises(InputError) as err:
        plan_deployment(_scenario(device=device, model=model, site=site))
    assert err.value.where == where
    for word in words:
        assert word in err.value.problem
