"""scripts/export.py and engine/export: a trained checkpoint as an ONNX graph that onnxruntime runs to the
engine's probabilities; what has no ONNX form, and bad input, refused in one line."""
import importlib.util
import json
import sys

import numpy as np
import pytest
import yaml

import engine
from engine import training
from engine.compiler import spec as spec_file
from engine.data import datasets
from engine.export import ExportError, export
from engine.export import onnx as to_onnx
from engine.training import restore

from conftest import HAVE_MNIST, MNIST, ROOT, SPEC, load_train_script

onnx = pytest.importorskip("onnx", reason="the onnx package is a test extra: pip install -e '.[test]'")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a test extra: pip install -e '.[test]'")

SHIPPED = ["seven-layer", "seven-layer-bn", "resnet", "zoo", "softmax-regression", "vit", "mixer"]  # every network


def data_args() -> list:
    """Real images to train and test on: the shared MNIST test split, else Fashion-MNIST's where it is installed."""
    if HAVE_MNIST:
        return ["--dataset", "mnist", "--data-dir", str(MNIST)]
    if datasets.locate("fashion-mnist", "test") is not None:
        return ["--dataset", "fashion-mnist"]
    pytest.skip("neither the shared MNIST test split nor Fashion-MNIST is here to train on")


def script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cli():
    return script("export")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """trained(network, spec=SPEC): a checkpoint of a few Adam steps (4 batches of 32 real images), made once."""
    made, train = {}, load_train_script("train_for_export")
    folder = tmp_path_factory.mktemp("runs")

    def make(network, spec=SPEC):
        if (network, spec) not in made:
            path = folder / f"{network}-{len(made)}.npz"
            code = train.main(["--spec", str(spec), "--network", network, *data_args(), "--holdout", "500",
                               "--limit", "128", "--test-limit", "32", "--batch-size", "32", "--epochs", "1",
                               "--warmup", "0", "--no-progress", "--checkpoint", str(path)])
            assert code == 0
            made[(network, spec)] = path
        return made[(network, spec)]
    return make


@pytest.fixture(scope="module")
def images():
    """64 real test images (N, 28, 28, 1) in [0, 1], float32: the pixels the engine and onnxruntime both get."""
    name, where = ("mnist", MNIST) if HAVE_MNIST else ("fashion-mnist", None)
    if datasets.locate(name, "test", where) is None:
        pytest.skip("no real test images here")
    test = datasets.load(name, "test", data_dir=where, download=False)
    return (test.images[:64].reshape(-1, 28, 28, 1) / np.float32(255)).astype(np.float32)


def exported(cli, capsys, checkpoint, out, *more) -> str:
    code = cli.main(["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out), *more])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def refused(cli, capsys, args) -> str:
    """The one line on stderr of an export.py run refused with exit code 2."""
    try:
        code = cli.main(args)
    except SystemExit as exit_:  # argparse's own refusal, one line too
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def restored(path):
    """The checkpoint's network, as the engine runs it."""
    return restore.restored(restore.load_checkpoint(path), path, SPEC).net


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"images": x})[0]


@pytest.mark.parametrize("network", SHIPPED)
def test_onnxruntime_gives_the_engines_probabilities_to_1e_5(network, cli, capsys, trained, images, tmp_path):
    checkpoint = trained(network)
    exported(cli, capsys, checkpoint, tmp_path / "model.onnx")
    net = restored(checkpoint)
    got, want = run_onnx(tmp_path / "model.onnx", images), net.forward(images)
    assert got.shape == want.shape == (64, 10)
    assert np.abs(got - want).max() <= 1e-5


def test_batch_norm_runs_on_the_running_statistics_the_checkpoint_holds(cli, capsys, trained, tmp_path):
    checkpoint = trained("seven-layer-bn")
    exported(cli, capsys, checkpoint, tmp_path / "bn.onnx")
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(tmp_path / "bn.onnx").graph.initializer}
    with np.load(checkpoint, allow_pickle=False) as saved:
        mean, variance = saved["state/bn1/rm"], saved["state/bn1/rv"]
    assert np.abs(mean).max() > 1e-3 and np.abs(variance - 1).max() > 1e-3  # trained away from zeros and ones
    assert np.array_equal(weights["bn1/rm"], mean) and np.array_equal(weights["bn1/rv"], variance)


def test_the_graph_names_its_input_images_and_its_output_probabilities(cli, capsys, trained, tmp_path):
    exported(cli, capsys, trained("zoo"), tmp_path / "zoo.onnx")
    model = onnx.load(tmp_path / "zoo.onnx")
    assert [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in model.graph.input] \
        == [("images", ["batch", 28, 28, 1])]
    assert [o.name for o in model.graph.output] == ["probabilities"]


@pytest.mark.parametrize("network", ["zoo", "vit"])  # vit: attention's reshapes into heads keep the batch
def test_the_graph_takes_any_batch(network, cli, capsys, trained, images, tmp_path):
    exported(cli, capsys, trained(network), tmp_path / "m.onnx")
    assert [run_onnx(tmp_path / "m.onnx", images[:n]).shape for n in (1, 7)] == [(1, 10), (7, 10)]


def test_the_class_names_the_run_recorded_are_in_the_metadata(cli, capsys, trained, tmp_path):
    checkpoint = trained("softmax-regression")
    exported(cli, capsys, checkpoint, tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    dataset = data_args()[1]
    assert json.loads(props["classes"]) == list(datasets.DATASETS[dataset].classes)
    assert props["network"] == "softmax-regression"


def custom_spec(tmp_path, edit) -> str:
    """layers.yaml, changed by `edit(spec)`, written under tmp_path."""
    spec = yaml.safe_load(SPEC.read_text())
    edit(spec)
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def with_a_scale_kind(spec):
    """A user's kind (each feature times its own weight) in a network of its own."""
    spec["kinds"]["scale"] = {"cites": "extension: (2) with a weight per feature", "input": ["b", "features"],
                              "params": {"w": {"shape": ["features"], "init": "ones"}},
                              "forward": ["z[b,i] = x[b,i] * w[i]"], "backward": "derive"}
    spec["networks"]["scaled"] = {"cites": "extension", "input": [28, 28, 1], "loss": "softmax_cross_entropy",
                                  "layers": [{"name": "flatten", "kind": "flatten"},
                                             {"name": "scale", "kind": "scale"},
                                             {"name": "dense", "kind": "dense", "units": 10, "activation": "softmax"}]}


def test_a_kind_with_no_onnx_form_is_refused_naming_it(cli, capsys, trained, tmp_path):
    spec = custom_spec(tmp_path, with_a_scale_kind)
    out = tmp_path / "scaled.onnx"
    err = refused(cli, capsys, ["--checkpoint", str(trained("scaled", spec)), "--spec", str(spec), "--out", str(out)])
    assert "kind 'scale' has no ONNX form" in err and not out.exists()


def test_a_kind_of_a_shipped_name_that_means_something_else_is_refused(tmp_path):
    def bias_subtracted(spec):
        spec["kinds"]["dense"]["forward"] = ["z[b,j] = x[b,i] * w[i,j] - b[j]"]
        spec["kinds"]["dense"]["backward"] = "derive"
    net = engine.load(custom_spec(tmp_path, bias_subtracted), network="softmax-regression")
    net.params["dense"]["b"][:] = 0.5
    with pytest.raises(ExportError, match="layer 'dense' \\(dense\\): its ONNX form differs from the engine's"):
        export(net, "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.glob("*.onnx")) == []


def test_a_kind_of_a_shipped_name_whose_shapes_differ_is_refused_naming_the_layer(tmp_path):
    def weights_transposed(spec):
        spec["kinds"]["dense"]["params"]["w"]["shape"] = ["units", "features"]
        spec["kinds"]["dense"]["forward"] = ["z[...,j] = x[...,i] * w[j,i] + b[j]"]
        spec["kinds"]["dense"]["backward"] = "derive"
    net = engine.load(custom_spec(tmp_path, weights_transposed), network="softmax-regression")
    with pytest.raises(ExportError, match="layer 'dense' \\(dense\\): its ONNX form does not check") as refusal:
        export(net, "onnx", tmp_path / "m.onnx")
    assert "\n" not in str(refusal.value) and list(tmp_path.glob("*.onnx")) == []


@pytest.mark.parametrize("args, says", [
    (["--format", "tflite"], "invalid choice: 'tflite'"),
    (["--out", "{tmp}/missing/m.onnx"], "its folder {tmp}/missing does not exist"),
    (["--out", "{tmp}"], "a folder; give a file name"),
    (["--checkpoint", "{tmp}/notes.npz"], "damaged or not a checkpoint"),
    (["--checkpoint", "{tmp}/none.npz"], "no such checkpoint"),
    (["--out", "{tmp}/notes.npz"], "--out {tmp}/notes.npz and --checkpoint {tmp}/notes.npz are one file"),
], ids=["unknown format", "out in a missing folder", "out a folder", "not a checkpoint", "no checkpoint",
        "out the checkpoint"])
def test_bad_input_is_one_line_and_exit_code_2(cli, capsys, tmp_path, args, says):
    (tmp_path / "notes.npz").write_text("not an archive")
    given = dict(zip(["--checkpoint", "--out"], [str(tmp_path / "notes.npz"), str(tmp_path / "m.onnx")]))
    given.update(zip(args[::2], [a.format(tmp=tmp_path) for a in args[1::2]]))
    err = refused(cli, capsys, [a for kv in given.items() for a in kv])
    assert err.startswith("export.py: ") and says.format(tmp=tmp_path) in err


def test_a_failed_write_leaves_the_old_file_and_no_half_one(tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the model before")
    net = engine.load(SPEC, network="softmax-regression")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("engine.export.os.replace", full_disk)  # the rename of the whole file fails
    with pytest.raises(ExportError, match="cannot write it \\(No space left on device\\); nothing was written"):
        export(net, "onnx", out)
    assert out.read_bytes() == b"the model before" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_network_fitted_to_its_own_data_exports_at_that_shape_with_its_class_names(cli, capsys, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (96, 12, 12, 3), dtype=np.uint8), rng.integers(0, 3, 96)
    data = training.Data(x[:64], y[:64], x[64:], y[64:], classes=["cat", "dog", "fox"])
    o = training.Options(settings={"network": "seven-layer-bn", "epochs": 1, "batch_size": 32},
                         checkpoint=tmp_path / "own.npz", progress=False)
    training.train(o, log=lambda line: None, data=data)
    exported(cli, capsys, tmp_path / "own.npz", tmp_path / "own.onnx")
    net = restored(tmp_path / "own.npz")
    images = x[64:].astype(np.float32) / 255
    assert np.abs(run_onnx(tmp_path / "own.onnx", images) - net.forward(images)).max() <= 1e-5
    model = onnx.load(tmp_path / "own.onnx")
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", 12, 12, 3]
    assert json.loads({p.key: p.value for p in model.metadata_props}["classes"]) == ["cat", "dog", "fox"]


def test_without_the_onnx_package_the_export_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    with pytest.raises(ExportError, match=r"the onnx package is not installed; install it with: .*\[export\]"):
        export(engine.load(SPEC, network="softmax-regression"), "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_every_network_of_layers_yaml_has_an_onnx_form():
    networks = spec_file.read(SPEC).networks
    gaps = {name: [layer.kind for layer in net.layers if layer.kind not in to_onnx.KINDS]
            + [layer.activation for layer in net.layers if layer.activation not in to_onnx.ACTIVATIONS]
            for name, net in networks.items()}
    assert gaps == {name: [] for name in networks}


def with_features_last_on_an_image(spec):
    """A layer norm and a dense layer on an image [b, h, w, c]: over each pixel's channels, as `...` reads them."""
    spec["networks"]["pixelwise"] = {
        "cites": "extension", "input": [8, 8, 3], "loss": "softmax_cross_entropy",
        "layers": [{"name": "conv", "kind": "conv2d", "filters": 4, "kernel": 3, "activation": "relu"},
                   {"name": "norm", "kind": "layernorm"},
                   {"name": "mix", "kind": "dense", "units": 5, "activation": "gelu"},
                   {"name": "flatten", "kind": "flatten"},
                   {"name": "out", "kind": "dense", "units": 10, "activation": "softmax"}]}


def test_a_dense_layer_and_a_layer_norm_on_an_image_act_on_each_pixels_channels(tmp_path):
    net = engine.load(custom_spec(tmp_path, with_features_last_on_an_image), network="pixelwise")
    rng = np.random.default_rng(0)
    for name in ("norm", "mix"):
        for p in net.params[name].values():
            p += rng.normal(0, 0.5, p.shape)  # away from ones and zeros: a wrong axis shows
    export(net, "onnx", tmp_path / "m.onnx")
    x = rng.random((4, 8, 8, 3), dtype=np.float32)
    assert np.abs(run_onnx(tmp_path / "m.onnx", x) - net.forward(x)).max() <= 1e-5


def test_a_run_that_saw_its_test_images_mirrored_is_exported_as_one_pass_and_says_so(cli, capsys, trained, tmp_path):
    said = exported(cli, capsys, trained("vit"), tmp_path / "vit.onnx")  # vit's training: test_augment flip
    assert said.splitlines()[-1] == ("note: the run saw each test image also mirrored (test_augment flip) and the "
                                     "graph is one pass: to predict as it did, average the probabilities of an "
                                     "image and of its mirror image")
    assert "note:" not in exported(cli, capsys, trained("zoo"), tmp_path / "zoo.onnx")
