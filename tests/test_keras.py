"""from_keras: Keras applications built fresh (torch backend, random weights, randomised BN
statistics), saved in each of Keras' file formats, converted, and compared on logits."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest
import torch

from lightnets.convert import KERAS_PREPROCESSING, from_keras, read_keras_weights

# Every test here needs keras (and h5py, which brings numpy): skip the file without them.
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")
np = pytest.importorskip("numpy")
legacy_h5_format = pytest.importorskip("keras.src.legacy.saving.legacy_h5_format")

SIZE = 64
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn.t accept a copy keyword:DeprecationWarning"
)


def _keras_model(name, **options):
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(SIZE, SIZE, 3), classes=12, classifier_activation=None, **options
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = (w.shape for w in layer.get_weights())
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma).astype("float32"), rng.normal(0, 0.2, beta).astype("float32"),
                rng.normal(0, 0.2, mean).astype("float32"), rng.uniform(0.5, 1.5, var).astype("float32"),
            ])
    return model


def _save(model, path, fmt):
    if fmt == "weights.h5":  # Keras 3: layers named by class and position
        model.save_weights(path)
    elif fmt == "keras":  # Keras 3 whole-model zip
        model.save(path)
    elif fmt == "legacy.h5":  # what keras.applications publishes: layers by name
        import h5py

        with h5py.File(path, "w") as handle:
            legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    else:  # legacy whole-model file: weights under "model_weights"
        model.save(path)
    return path


@pytest.mark.parametrize(
    ("name", "options", "fmt"),
    [
        ("MobileNet", {"alpha": 0.5}, "legacy.h5"),
        ("MobileNetV2", {"alpha": 0.35}, "weights.h5"),
        ("MobileNetV2", {"alpha": 1.0}, "legacy.h5"),
        ("MobileNetV3Small", {"alpha": 0.75}, "keras"),
        ("MobileNetV3Large", {"alpha": 1.0}, "model.h5"),
        ("MobileNetV3Large", {"minimalistic": True}, "weights.h5"),
    ],
)
def test_keras_weights_give_equal_logits(tmp_path, name, options, fmt):
    reference = _keras_model(name, **options)
    suffix = {"weights.h5": ".weights.h5", "keras": ".keras"}.get(fmt, ".h5")
    path = _save(reference, str(tmp_path / f"model{suffix}"), fmt)
    ours = from_keras(name, path, width_mult=options.get("alpha", 1.0),
                      minimal=options.get("minimalistic", False)).eval()
    pixels = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    # V1 and V2 take preprocess_input's [-1, 1]; V3 rescales 0..255 inside the model.
    expected = np.asarray(reference(pixels if name.startswith("MobileNetV3") else pixels / 127.5 - 1,
                                    training=False).detach().cpu())
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (KERAS_PREPROCESSING["mean"], KERAS_PREPROCESSING["std"]))
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255 - mean) / std
    with torch.no_grad():
        logits = ours(x).numpy()
    np.testing.assert_allclose(logits, expected, atol=2e-4, rtol=1e-4)
    assert np.abs(expected).max() > 0.1  # the comparison is not between two near-zero outputs


def test_keras_formats_list_the_same_layers(tmp_path):
    model = _keras_model("MobileNetV3Small", alpha=1.0)
    keras3 = read_keras_weights(_save(model, str(tmp_path / "a.weights.h5"), "weights.h5"))
    legacy = read_keras_weights(_save(model, str(tmp_path / "b.h5"), "legacy.h5"))
    assert [layer.kind for layer in keras3] == sorted((layer.kind for layer in legacy),
                                                      key=["conv", "depthwise", "batchnorm", "dense"].index)
    assert legacy[1].name == "conv_bn" and legacy[1].kind == "batchnorm"


def test_keras_mismatch_names_layer_and_shapes(tmp_path):
    path = _save(_keras_model("MobileNetV2", alpha=0.5), str(tmp_path / "v2.h5"), "legacy.h5")
    message = (r"Keras layer 'Conv1' gives weight of shape \(16, 3, 3, 3\), "
               r"lightnets conv_stem.weight has \(32, 3, 3, 3\)")
    with pytest.raises(ValueError, match=message):
        from_keras("MobileNetV2", path)  # the file is alpha 0.5
    with pytest.raises(ValueError, match="does not match the lightnets model"):
        from_keras("MobileNet", path, width_mult=0.5)
    with pytest.raises(ValueError, match="no Keras converter for 'MobileNetV4'; allowed: MobileNet, MobileNetV2"):
        from_keras("MobileNetV4", path)
    with pytest.raises(ValueError, match="minimalistic\\) exists for MobileNetV3 only"):
        from_keras("MobileNetV2", path, width_mult=0.5, minimal=True)


def test_keras_bad_files_are_refused(tmp_path):
    notop = keras.applications.MobileNetV2(weights=None, input_shape=(SIZE, SIZE, 3), include_top=False, alpha=0.35)
    path = str(tmp_path / "notop.weights.h5")
    notop.save_weights(path)
    with pytest.raises(ValueError, match="include_top=False"):
        from_keras("MobileNetV2", path, width_mult=0.35)
    text = tmp_path / "weights.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="is not an HDF5 file"):
        from_keras("MobileNetV2", str(text))
    with pytest.raises(FileNotFoundError, match="no such Keras weight file"):
        from_keras("MobileNetV2", str(tmp_path / "missing.h5"))


def test_convert_command_writes_a_checkpoint_predict_and_export_use(tmp_path, capsys):
    from PIL import Image

    from lightnets.cli import main

    path = _save(_keras_model("MobileNetV3Small", alpha=0.75), str(tmp_path / "v3s.weights.h5"), "weights.h5")
    out = str(tmp_path / "v3s.safetensors")
    assert main(["convert", "keras", "MobileNetV3Small", path, "--width-mult", "0.75", "--resolution", "64",
                 "-o", out]) == 0
    assert "lightnets mobilenet_v3_small (" in capsys.readouterr().out
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "mobilenet_v3_small", "--checkpoint", out, str(image)]) == 0
    assert "  5. " in capsys.readouterr().out
    fresh = str(tmp_path / "refused.safetensors")  # not 'out', which exists and would be refused without --force
    assert main(["convert", "keras", "MobileNetV3Small", path, "-o", fresh]) == 2  # alpha 1.0 does not fit the file
    assert "Keras layer" in capsys.readouterr().err
    assert main(["convert", "timm", "mobilenetv2_100", path, "--width-mult", "0.5", "-o", fresh]) == 2
    assert "Keras files only" in capsys.readouterr().err
