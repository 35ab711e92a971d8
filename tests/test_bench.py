"""scripts/bench.py reports what issue 6 asks for; speed itself is a benchmark, never asserted here."""
import json

from conftest import run_script


def bench(*args):
    return run_script("bench.py", *args).stdout


def test_json_report_has_throughput_flops_memory_and_a_breakdown():
    doc = json.loads(bench("--batch", "2", "--rounds", "1", "--repeats", "1", "--no-torch", "--json",
                           "--breakdown"))
    assert doc["gemm_gflops"] > 0
    (row,) = doc["batches"]
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


def test_tables_by_default():
    text = bench("--batch", "2", "--rounds", "1", "--repeats", "1", "--no-torch")
    assert text.startswith("batch 2: engine ") and "cold start" in text and "peak RSS" in text


def test_batched_products_report_the_notation_beside_np_matmul():
    rows = json.loads(run_script("bench_products.py", "--shrink", "16", "--rounds", "1", "--repeats", "1",
                                 "--json").stdout)
    assert [r["equation"] for r in rows] == ["s[b,h,i,j] = q[b,h,i,d] * k[b,h,j,d]",
                                             "o[b,h,i,d] = p[b,h,i,j] * v[b,h,j,d]",
                                             "z[v,u,b,k] = x[v,u,b,r] * w[v,u,r,k]"]
    assert all(r["strategy"] == "batched GEMM" and r["notation_ms"] > 0 and r["ratio"] > 0 for r in rows)
