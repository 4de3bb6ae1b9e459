"""The roofline's tensor-parallel all-reduce by fabric (catalog `interconnect`), against hand
computations; devices without one keep the legacy charge their pinned outputs were tuned with."""

from __future__ import annotations

import numpy as np
import pytest
from scenarios import scenario

from simcost.catalog.specs import get_device, get_model
from simcost.errors import InputError
from simcost.perf.deployment import plan_deployment
from simcost.perf.kernel_tables import KernelTables
from simcost.perf.roofline import allreduce_cost
from simcost.perf.step_model import step_params
from simcost.perf.step_params import StepParams
from simcost.perf.step_reference import step_time_s_py

L70 = get_model("llama-3.1-70b")


def step_params_of(device: str, tp: int, model: str = "llama-3.1-70b", **kw):
    s = scenario(model={"name": model}, hardware={"device": device, "tensor_parallel": tp},
                 fleet={"price_usd_per_device_hour": 1.0}, engine={"max_model_len": 8192}, **kw)
    return step_params(s, plan_deployment(s))


def comm(device: str, tp: int, model: str = "llama-3.1-70b", weight_format: str = "fp8", **kw) -> StepParams:
    s = scenario(model={"name": model, "weight_format": weight_format}, hardware={"device": device, "tensor_parallel": tp},
                 fleet={"price_usd_per_device_hour": 1.0}, **kw)
    return StepParams.from_array(step_params(s, plan_deployment(s)))


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_nvswitch_pays_one_flat_latency_and_the_ring_bandwidth_term(tp):
    p = comm("b200", tp)
    allreduces = 2 * L70.num_layers
    assert p.comm_fixed_s == pytest.approx(allreduces * 12e-6)  # flat in tp
    # each all-reduce moves 2 (t-1)/t of tokens x hidden x 2 bytes over 900 GB/s
    assert p.comm_s_per_token == pytest.approx(allreduces * 2 * (tp - 1) / tp * 8192 * 2 / 900e9)


@pytest.mark.parametrize("tp", [2, 4])
def test_a_pcie_ring_pays_a_latency_per_hop(tp):
    p = comm("l40s", tp, model="llama-3.1-8b")
    allreduces = 2 * get_model("llama-3.1-8b").num_layers
    assert p.comm_fixed_s == pytest.approx(allreduces * 2 * (tp - 1) * 5e-6)
    assert p.comm_s_per_token == pytest.approx(allreduces * 2 * (tp - 1) / tp * 4096 * 2 / 32e9)


@pytest.mark.parametrize("device,link", [("mi300x", 64e9), ("mi355x", 76.8e9)])
@pytest.mark.parametrize("tp", [2, 4, 8])
def test_a_full_mesh_pays_one_flat_latency_over_t_minus_1_links(device, tp, link):
    # AMD Infinity Fabric: a dedicated link to each peer, so t GPUs all-reduce over t - 1 links each
    # (vLLM PR 39080: MI355X peak bus bandwidth (N-1) x 76.8 GB/s)
    p = comm(device, tp)
    allreduces = 2 * L70.num_layers
    assert p.comm_fixed_s == pytest.approx(allreduces * 12e-6)
    assert p.comm_s_per_token == pytest.approx(allreduces * 2 * (tp - 1) / tp * 8192 * 2 / ((tp - 1) * link))


def test_more_tensor_parallelism_on_a_mesh_does_not_slow_a_70b_decode_step():
    # with the legacy (t - 1) x 30 us per all-reduce, 8 x MI300X decoded Llama-3.1-70B slower (43 ms)
    # than one MI300X (38 ms)
    def decode_s(tp):
        p = step_params_of("mi300x", tp)
        return step_time_s_py(p, 0, 1, 1025.0, 1024.0, 0)
    times = [decode_s(tp) for tp in (1, 2, 4, 8)]
    assert times == sorted(times, reverse=True), times


def test_devices_without_a_fabric_keep_the_legacy_charge():
    # the A100 stays legacy: a fitted NVSwitch fabric took the Splitwise A100 (eager engine)
    # held-out decode error from 9.6 % to 45 % median (docs/fidelity.md)
    assert get_device("a100-80gb").interconnect is None
    p = comm("a100-80gb", 8, weight_format="bf16")
    assert p.comm_fixed_s == pytest.approx(2 * L70.num_layers * 7 * 30e-6)


def test_at_tp8_the_switch_costs_far_less_than_the_legacy_ring_latency():
    # the point: 2 L (t-1) x 30 us at TP8 is ~34 ms per step; a switch's flat latency is ~2 ms
    assert comm("b200", 8).comm_fixed_s < comm("a100-80gb", 8, weight_format="bf16").comm_fixed_s / 5


@pytest.mark.parametrize("device,table", [("h100-sxm", "h100_sxm"), ("h200", "h200_sxm")])
@pytest.mark.parametrize("tp", [2, 4, 8])
@pytest.mark.parametrize("message_bytes", [16 * 1024, 2**20, 4 * 2**20])
def test_the_hopper_fabric_reproduces_the_measured_vllm_all_reduce(device, table, tp, message_bytes):
    # the catalog's fitted NVSwitch (experiments/validate_roofline_fabric.py) against the CUDA-graph
    # rows it was fitted on, at one decode-sized all-reduce (16 KB: one 8192-wide token; 4 MB: 256)
    measured_ms, inside = KernelTables(table).allreduce_ms(tp, np.array([float(message_bytes)]), np.array([True]))
    assert inside[0]
    fixed_s, s_per_token = allreduce_cost(get_device(device).interconnect, 1, 8192, tp)
    one_allreduce_s = (fixed_s + s_per_token * message_bytes / (8192 * 2)) / 2  # 2 all-reduces per layer
    assert one_allreduce_s == pytest.approx(measured_ms[0] / 1e3, rel=0.25)


@pytest.mark.parametrize("device", ["h100-sxm", "h200"])
def test_more_tensor_parallelism_on_hopper_speeds_a_70b_decode_step(device):
    # measured (kernel tables): 29, 16, 11 ms at TP 2/4/8 on H100 (bf16 needs two); the legacy charge
    # made the roofline's TP8 (45 ms) slower than its TP4 (33 ms)
    times = [step_time_s_py(step_params_of(device, tp), 0, 1, 1025.0, 1024.0, 0) for tp in (2, 4, 8)]
    assert times == sorted(times, reverse=True), times


def test_a_bad_interconnect_entry_is_refused_naming_the_key():
    device = {"name": "Test GPU", "kind": "gpu", "memory_gb": 180, "mem_bw_gb_per_s": 8000,
              "peak_tflops": {"bf16": 2250}, "link_gb_per_s": 900, "idle_w": 200, "peak_w": 1000, "mfu": 0.65,
              "mbu": 0.8, "step_overhead_s": 0.005, "allreduce_latency_s": 0.00003, "price_usd_per_hour": 9.5,
              "interconnect": {"kind": "carrier-pigeon", "bandwidth_gb_per_s": 1, "latency_us": 1},
              "sources": {g: {"source": "test", "date": "2026-12-06"}
                          for g in ("spec", "power", "price", "efficiency", "interconnect")}}
    with pytest.raises(InputError) as err:
        scenario(catalog={"devices": {"test-gpu": device}})
    assert "devices.test-gpu.interconnect.kind" in str(err.value) and "nvswitch" in str(err.value)
    del device["sources"]["interconnect"]
    device["interconnect"]["kind"] = "pcie"
    with pytest.raises(InputError) as err:
        scenario(catalog={"devices": {"test-gpu": device}})
    assert "interconnect" in str(err.value)
