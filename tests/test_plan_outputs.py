"""What size and commitments leave behind: a results folder, JSON on stdout, and for size the
chosen deployment as a vLLM command line and Kubernetes manifests that say what was simulated."""

from __future__ import annotations

import argparse
import csv
import json
import shlex

import pytest
import yaml
from scenarios import BASE, merge

import simcost
from simcost.analysis.deploy import kubernetes_manifests, vllm_args
from simcost.cli.main import main


def vllm_parser() -> argparse.ArgumentParser:
    """The flags simcost writes, parsed the way `vllm serve` declares them."""
    p = argparse.ArgumentParser()
    p.add_argument("model")
    for flag in ("--tensor-parallel-size", "--pipeline-parallel-size", "--max-num-seqs", "--max-num-batched-tokens",
                 "--max-model-len", "--block-size", "--num-gpu-blocks-override"):
        p.add_argument(flag, type=int)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--kv-cache-dtype")
    p.add_argument("--quantization")
    p.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction)
    return p


@pytest.fixture(scope="module")
def sized(tmp_path_factory):
    raw = merge(BASE, {"engine": {"policy": "chunked", "max_num_seqs": 64, "prefix_caching": True},
                       "hardware": {"device": "h100-sxm", "memory_utilization": 0.85}})
    out = tmp_path_factory.mktemp("size") / "out"
    return simcost.size(raw, devices=["a100-80gb", "h100-sxm"], max_replicas=4, out=out, progress=False), out


def test_vllm_args_round_trip_the_chosen_deployment(sized):
    sizing, out = sized
    chosen = simcost.load(sizing.scenario, overrides={**sizing.chosen.option, "fleet.replicas": sizing.chosen.replicas})
    args = vllm_args(chosen)
    assert args[:2] == ["vllm", "serve"]
    parsed = vllm_parser().parse_args(args[2:])
    from simcost.perf.deployment import plan_deployment

    dep = plan_deployment(chosen)
    assert parsed.model == "meta-llama/Llama-3.1-8B"  # the repository the catalog cites
    assert (parsed.tensor_parallel_size, parsed.max_num_seqs, parsed.block_size) == (
        dep.tensor_parallel, chosen.engine.max_num_seqs, chosen.engine.block_size)
    assert (parsed.max_num_batched_tokens, parsed.max_model_len) == (dep.max_num_batched_tokens, dep.max_model_len)
    assert parsed.gpu_memory_utilization == 0.85 and parsed.enable_chunked_prefill and parsed.enable_prefix_caching
    # the script in the folder is the same command
    script = (out / "vllm-serve.sh").read_text()
    command = [line for line in script.replace("\\\n", " ").splitlines() if line.startswith("vllm")][0]
    assert shlex.split(command) == args
    assert json.loads((out / "result.json").read_text())["vllm_args"] == args


def test_kubernetes_manifests_parse_with_the_chosen_fleet(sized):
    sizing, out = sized
    docs = list(yaml.safe_load_all((out / "kubernetes.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "HorizontalPodAutoscaler"]
    deployment, hpa = docs
    assert deployment["apiVersion"] == "apps/v1" and hpa["apiVersion"] == "autoscaling/v2"
    n = sizing.chosen.replicas
    assert deployment["spec"]["replicas"] == n
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1  # tensor_parallel 1
    assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (n, n + 2)  # N up to the N+2 priced
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "vllm_num_requests_waiting"  # no autoscaler: assumed
    assert "assumption" in hpa["metadata"]["annotations"]["simcost/metric"]


def test_an_autoscaled_scenario_gives_the_hpa_its_bounds_and_gpus_per_pod():
    raw = merge(BASE, {"hardware": {"device": "h100-sxm", "tensor_parallel": 2},
                       "fleet": {"replicas": 2, "autoscaler": {"policy": "hpa", "target": 8, "min_replicas": 2,
                                                               "max_replicas": 7}}})
    deployment, hpa = kubernetes_manifests(simcost.load(raw), 3)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 7)
    # the scenario's metric (concurrency, the default) and target become vLLM's running-requests gauge at 8 per pod
    assert hpa["spec"]["metrics"][0]["pods"] == {"metric": {"name": "vllm_num_requests_running"},
                                                 "target": {"type": "AverageValue", "averageValue": "8"}}
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == 2


def test_size_folder_and_json_agree(sized, tmp_path, capsys):
    sizing, out = sized
    assert {p.name for p in out.iterdir()} == {"result.json", "options.csv", "sizing.png", "vllm-serve.sh", "kubernetes.yaml"}
    data = json.loads((out / "result.json").read_text())
    assert data["chosen"]["replicas"] == sizing.chosen.replicas and data["command"] == "size"
    with (out / "options.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["option"] for r in rows] == [o.label for o in sizing.result.options]
    assert float(rows[0]["usd_per_hour"]) == pytest.approx(sizing.chosen.usd_per_hour)
    scenario_file = tmp_path / "s.yaml"
    scenario_file.write_text(yaml.safe_dump(merge(BASE, {"engine": {"policy": "chunked", "max_num_seqs": 64,
                                                                    "prefix_caching": True},
                                                         "hardware": {"device": "h100-sxm", "memory_utilization": 0.85}})))
    assert main(["size", str(scenario_file), "--devices", "a100-80gb,h100-sxm", "--max-replicas", "4", "--jobs", "1",
                 "--json", "-q", "--out", str(tmp_path / "cli")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["chosen"] == data["chosen"] and printed["options"] == data["options"]


def test_commitments_folder_adds_up_to_the_plan(tmp_path, capsys):
    scenario_file = tmp_path / "s.yaml"
    scenario_file.write_text(yaml.safe_dump(BASE))
    assert main(["commitments", str(scenario_file), "--out", str(tmp_path / "cm"), "--json", "-q"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "cm" / "result.json").read_text())
    with (tmp_path / "cm" / "commitments.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == printed["hours"] == 168  # one simulated hour tiled to a week
    for column, plan in (("on_demand_usd", printed["reserved"]["on_demand_cost_usd"]),
                         ("reserved_usd", printed["reserved"]["cost_usd"]),
                         ("savings_plan_usd", printed["savings_plan"]["cost_usd"])):
        assert sum(float(r[column]) for r in rows) == pytest.approx(plan, rel=1e-9)  # every hour's dollars, no more
    assert (tmp_path / "cm" / "commitments.png").stat().st_size > 1000


def report_text(folder) -> str:
    import re

    html = (folder / "report.html").read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_report_renders_a_size_folder(sized, capsys):
    sizing, out = sized
    assert main(["report", str(out)]) == 0
    text = report_text(out)
    c = sizing.chosen
    assert f"{c.replicas} x {c.label}" in text and f"${c.usd_per_hour:,.2f}" in text
    assert "vllm serve meta-llama/Llama-3.1-8B" in text and "HorizontalPodAutoscaler" in text
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 1


def test_report_renders_forecast_levers_and_commitments_folders(tmp_path, capsys):
    scenario_file = tmp_path / "s.yaml"
    scenario_file.write_text(yaml.safe_dump(BASE))
    common = [str(scenario_file), "-q", "--jobs", "1"]
    assert main(["forecast", *common, "--months", "2", "--seeds", "1", "--growth", "2", "--out", str(tmp_path / "fc")]) == 0
    assert main(["levers", *common, "--only", "spot", "--max-replicas", "2", "--out", str(tmp_path / "lv")]) == 0
    assert main(["commitments", str(scenario_file), "-q", "--out", str(tmp_path / "cm")]) == 0
    capsys.readouterr()
    for name, must in (("fc", ["Monthly spend and SLO", "x2"]), ("lv", ["Levers ranked by ROI", "spot"]),
                       ("cm", ["Commitment plans", "savings plan"])):
        data = json.loads((tmp_path / name / "result.json").read_text())
        assert main(["report", str(tmp_path / name)]) == 0
        text = report_text(tmp_path / name)
        assert all(m in text for m in must) and data["scenario"] in text
    forecast = json.loads((tmp_path / "fc" / "result.json").read_text())
    assert [m["load_factor"] for m in forecast["months"]] == [1.0, 2.0]  # growth 2 per month, compounding from x1


def test_report_refuses_a_result_json_of_another_command(tmp_path):
    from simcost.errors import InputError

    (tmp_path / "result.json").write_text('{"command": "dance"}')
    with pytest.raises(InputError, match="'command' is 'dance'"):
        from simcost.analysis.report_plans import render_plan

        render_plan(tmp_path)
