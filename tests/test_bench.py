"""scripts/bench.py reports what issue 6 asks for; speed itself is a benchmark, never asserted here."""
import importlib.util
import itertools
import json
import time

import pytest

from conftest import ROOT, run_script


def bench(*args):
    return run_script("bench.py", *args).stdout


def script_module(name):
    """scripts/<name>.py imported as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_json_report_has_throughput_flops_memory_and_a_breakdown():
    doc = json.loads(bench("--batch", "2", "--rounds", "1", "--repeats", "1", "--no-torch", "--json",
                           "--breakdown"))
    assert doc["gemm_gflops"] > 0
    assert doc["fused"].startswith(("fused loops in C", "numpy passes"))
    (row,) = doc["networks"]["seven-layer"]["batches"]
    assert row["batch"] == 2 and "pytorch" not in row and "ratio_train" not in row
    assert row["flops_forward"] > 0 and row["flops_backward"] > row["flops_forward"]
    assert row["engine"]["train_images_per_s"] > 0 and row["engine"]["infer_images_per_s"] > 0
    assert row["cold_start_s"] > 0 and row["peak_rss_mib"] > 0
    rows = {r["contraction"]: r for r in row["breakdown"]}
    assert "GEMM into the result" in rows["layer 'conv1' (conv2d): z (forward)"]["strategies"]  # im2col
    assert "gather copy" in rows["layer 'conv1' (conv2d): xc (forward)"]["strategies"]
    assert "stacked GEMM" in rows["layer 'conv2' (conv2d): zs (forward)"]["strategies"]  # fourier, per frequency
    assert list(rows)[-2:] == ["(whole step, excluding the update)", "(the update: adam)"]
    gemm, whole = rows["(all GEMM into the result)"]["ms"], rows["(whole step, excluding the update)"]["ms"]
    assert 0 < gemm < whole
    conv = rows["layer 'conv1' (conv2d): z (forward)"]  # the roofline bound beside the time measured
    assert 0 < conv["bound_ms"] and conv["of_roofline"] == conv["bound_ms"] / conv["ms"]
    assert all("bound_ms" not in r for r in rows.values() if r["contraction"].startswith("("))


def test_tables_by_default():
    text = bench("--batch", "2", "--rounds", "1", "--repeats", "1", "--no-torch")
    first, second, rest = text.split("\n", 2)
    assert first.startswith("fused loops: ") and ("fused loops in C" in first or "numpy passes" in first)
    assert second == "network seven-layer: engine on fresh weights"
    assert rest.startswith("batch 2: engine ") and "cold start" in rest and "peak RSS" in rest


def test_batched_products_report_the_notation_beside_np_matmul():
    rows = json.loads(run_script("bench_products.py", "--shrink", "16", "--rounds", "1", "--repeats", "1",
                                 "--json").stdout)
    assert [r["equation"] for r in rows] == ["s[b,h,i,j] = q[b,h,i,d] * k[b,h,j,d]",
                                             "o[b,h,i,d] = p[b,h,i,j] * v[b,h,j,d]",
                                             "z[v,u,b,k] = x[v,u,b,r] * w[v,u,r,k]"]
    assert all(r["strategy"] == "batched GEMM" and r["notation_ms"] > 0 and r["ratio"] > 0 for r in rows)


@pytest.fixture
def side_by_side(monkeypatch):
    """scripts/bench.py's main with a stand-in for PyTorch (not a dependency of the tests), both
    sides logging their calls: (side, what) in order."""
    bench = script_module("bench")
    calls = []

    class Engine(bench.Engine):
        def train_step(self):
            calls.append(("engine", "train"))
            super().train_step()

        def infer(self):
            calls.append(("engine", "infer"))
            super().infer()

    class Torch:
        name = "pytorch"

        def __init__(self, net, batch, x, y, threads=2):
            calls.clear()  # the engine's first step (its cold start) is not a timed round's

        def train_step(self):
            calls.append(("pytorch", "train"))
            time.sleep(0.002)

        def infer(self):
            calls.append(("pytorch", "infer"))
            time.sleep(0.001)

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "torch" else find_spec(name, *a))
    monkeypatch.setattr(bench, "Engine", Engine)
    monkeypatch.setattr(bench, "Torch", Torch)
    return bench, calls


def test_side_by_side_each_side_warms_up_before_every_timed_round_and_neither_always_goes_first(side_by_side,
                                                                                                 capsys, monkeypatch):
    bench, calls = side_by_side
    monkeypatch.setattr(bench, "WARM_S", 0.0)  # --warmup calls alone: counted below
    bench.main(["--batch", "2", "--rounds", "2", "--repeats", "3", "--warmup", "2", "--json"])
    runs = [(side, what, len(list(group))) for (side, what), group in itertools.groupby(calls)]
    assert runs == [("engine", "train", 5), ("engine", "infer", 5), ("pytorch", "train", 5), ("pytorch", "infer", 5),
                    ("pytorch", "train", 5), ("pytorch", "infer", 5), ("engine", "train", 5), ("engine", "infer", 5)]
    (row,) = json.loads(capsys.readouterr().out)["networks"]["seven-layer"]["batches"]
    e, p = row["engine"], row["pytorch"]
    assert p["train_step_ms"] >= 2 and p["fastest_train_step_ms"] <= p["train_step_ms"]
    assert row["ratio_train"] == pytest.approx(e["train_images_per_s"] / p["train_images_per_s"])
    assert row["ratio_infer"] == pytest.approx(e["infer_images_per_s"] / p["infer_images_per_s"])
    assert row["ratio_train_paired"] > 0 and row["ratio_infer_paired"] > 0


def test_each_side_warms_up_for_warm_s_at_least_whatever_its_warmup_calls(side_by_side, monkeypatch):
    bench, calls = side_by_side
    monkeypatch.setattr(bench, "WARM_S", 0.03)
    bench.main(["--batch", "2", "--rounds", "1", "--repeats", "1", "--warmup", "0", "--only", "pytorch", "--json"])
    trains = [what for side, what in calls if what == "train"]
    assert len(trains) >= 0.03 / 0.002 * 0.5 + 1  # 2 ms calls for 30 ms, then the one timed


def test_one_side_alone_is_timed_without_the_other_and_without_a_ratio(side_by_side, capsys):
    bench, calls = side_by_side
    bench.main(["--batch", "2", "--rounds", "2", "--repeats", "1", "--warmup", "0", "--only", "pytorch"])
    assert {side for side, _ in calls} == {"pytorch"}
    out = capsys.readouterr().out
    assert "engine not timed (--only pytorch)" in out and "(timed alone)" in out and "ratio" not in out


def test_json_covers_every_network_asked_for_in_the_order_asked():
    doc = json.loads(bench("--network", "zoo", "--network", "softmax-regression", "--batch", "2", "--rounds", "1",
                           "--repeats", "1", "--no-torch", "--json"))
    assert list(doc["networks"]) == ["zoo", "softmax-regression"]
    for section in doc["networks"].values():
        (row,) = section["batches"]
        assert section["weights"] == "fresh" and "no_twin" not in section
        assert row["batch"] == 2 and row["engine"]["train_images_per_s"] > 0 and "pytorch" not in row


def test_network_all_names_every_network_of_the_spec_in_the_text():
    import engine
    text = bench("--network", "all", "--batch", "1", "--rounds", "1", "--repeats", "1", "--warmup", "0", "--no-torch")
    named = [line.split(":")[0] for line in text.splitlines() if line.startswith("network ")]
    assert named == [f"network {name}" for name in engine.read(ROOT / "layers.yaml").networks]


def test_breakdown_labels_are_printed_whole():
    text = bench("--batch", "2", "--rounds", "1", "--repeats", "1", "--no-torch", "--breakdown")
    long = ("layer 'pool1' (maxpool), activation 'relu' of layer 'conv1', run after the pool ((18) and (20) "
            "commute): a (forward)")
    assert any(line.strip().startswith(long) for line in text.splitlines())


def user_spec(tmp_path):
    """layers.yaml with a kind of the user's own (no PyTorch twin) in a network of its own."""
    import yaml
    data = yaml.safe_load((ROOT / "layers.yaml").read_text())
    data["kinds"]["scale"] = {"cites": "extension: each feature times its own weight", "input": ["b", "features"],
                              "params": {"w": {"shape": ["features"], "init": "ones"}},
                              "forward": ["z[b,i] = x[b,i] * w[i]"], "backward": "derive"}
    data["networks"]["scaled"] = {"cites": "a test's", "input": [28, 28, 1], "loss": "softmax_cross_entropy",
                                  "layers": [{"name": "flatten", "kind": "flatten"},
                                             {"name": "scale", "kind": "scale"},
                                             {"name": "dense", "kind": "dense", "units": 10,
                                              "activation": "softmax"}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_network_with_a_kind_without_a_twin_is_timed_on_the_engine_alone_and_the_kind_named(side_by_side, capsys,
                                                                                               tmp_path):
    bench, calls = side_by_side
    bench.main(["--spec", str(user_spec(tmp_path)), "--network", "scaled", "--batch", "2", "--rounds", "1",
                "--repeats", "1", "--warmup", "0", "--json"])
    out = capsys.readouterr()
    section = json.loads(out.out)["networks"]["scaled"]
    assert section["no_twin"] == ["kind 'scale'"]
    assert "pytorch" not in section["batches"][0] and {side for side, _ in calls} == {"engine"}
    assert out.err.strip().splitlines()[-1] == "network scaled: PyTorch side skipped: no twin for kind 'scale'"


def test_every_kind_of_the_shipped_networks_has_a_twin():
    import engine
    twins = script_module("twins")
    spec = engine.read(ROOT / "layers.yaml")
    assert {name: twins.missing(engine.load(spec, network=name, check=False)) for name in spec.networks} == \
        {name: [] for name in spec.networks}
