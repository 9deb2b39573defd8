import pytest
import torch

import lightnets
from lightnets.catalog import task_of
from lightnets.convert import TORCHVISION_MODELS, from_torchvision
from lightnets.testing import randomize_for_parity as randomise


@pytest.fixture
def torchvision():
    """torchvision (the test extra), or skip: the converter's tests that build its models."""
    return pytest.importorskip("torchvision")


@pytest.mark.parametrize(
    "name", [n for n, ours in TORCHVISION_MODELS.items() if task_of(ours) == "classification"]  # LR-ASPP: test_dense
)
def test_output_parity_with_torchvision(name, torchvision):
    theirs = randomise(getattr(torchvision.models, name)(num_classes=100))
    ours = lightnets.create_model(TORCHVISION_MODELS[name], num_classes=100).eval()
    ours.load_state_dict(from_torchvision(name, theirs.state_dict()), strict=True)
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_converter_accepts_our_model_instance(torchvision):
    theirs = randomise(torchvision.models.shufflenet_v2_x0_5())
    ours = lightnets.create_model("shufflenet_v2_x0_5").eval()
    converted = from_torchvision(ours, theirs.state_dict())
    assert converted.keys() == ours.state_dict().keys()
    ours.load_state_dict(converted)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
    assert expected.abs().max() > 0.1  # the comparison is not between two near-zero outputs


def test_converter_rejects_other_architecture(torchvision):
    theirs = torchvision.models.shufflenet_v2_x1_0().state_dict()
    message = (r"shape mismatch: torchvision 'conv1.0.weight' \(24, 3, 3, 3\) "
               r"vs lightnets 'conv_stem.weight' \(32, 3, 3, 3\)")
    with pytest.raises(ValueError, match=message):
        from_torchvision("mobilenet_v2", {**theirs})
    with pytest.raises(ValueError, match="shape mismatch"):
        from_torchvision("shufflenet_v2_x0_5", theirs)


def test_converter_rejects_missing_tensors(torchvision):
    state = torchvision.models.mobilenet_v3_small().state_dict()
    state.pop("features.4.block.2.fc1.bias")
    with pytest.raises(ValueError, match="does not match lightnets key"):
        from_torchvision("mobilenet_v3_small", state)


def test_converter_rejects_unknown_name():
    with pytest.raises(ValueError, match="no torchvision converter for 'mobilenet_v1'; allowed: mobilenet_v2"):
        from_torchvision("mobilenet_v1", {})


@pytest.mark.parametrize(("source", "name", "suffix"), [("torchvision", "shufflenet_v2_x0_5", ".safetensors"),
                                                        ("timm", "tf_mobilenetv3_small_minimal_100", ".pth")])
def test_convert_checkpoint_loads_like_the_source(tmp_path, source, name, suffix):
    from safetensors.torch import save_file

    from lightnets.convert import convert_checkpoint
    from lightnets.formats import load_model

    library = pytest.importorskip(source)  # torchvision or timm, both in the test extra
    if source == "torchvision":
        reference = randomise(getattr(library.models, name)(num_classes=6))
    else:
        reference = randomise(library.create_model(name, num_classes=6))
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    path = str(tmp_path / f"w{suffix}")
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    config = convert_checkpoint(source, name, path, str(tmp_path / "out.safetensors"))
    loaded = load_model(str(tmp_path / "out.safetensors"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), reference.eval()(x), atol=1e-5, rtol=1e-5)
    assert loaded.class_names == [str(i) for i in range(6)] and loaded.config == config
    expected_mean = (0.485, 0.456, 0.406) if source == "torchvision" else (0.5, 0.5, 0.5)
    assert tuple(config["preprocessing"]["mean"]) == expected_mean


def test_from_torchvision_restores_order_under_a_wrapper_prefix(torchvision):
    theirs = randomise(torchvision.models.mobilenet_v2(num_classes=10))
    state = theirs.state_dict()
    shuffled = {f"module.{k}": state[k] for k in sorted(state)}  # as a DataParallel save read back from safetensors
    ours = lightnets.create_model("mobilenet_v2", num_classes=10).eval()
    ours.load_state_dict(from_torchvision("mobilenet_v2", shuffled))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_convert_refuses_files_it_cannot_read_safely(tmp_path):
    from lightnets.convert import load_state_file

    (tmp_path / "x.h5").write_bytes(b"\x89HDF\r\n\x1a\n not a pickle")
    with pytest.raises(ValueError, match="is not a PyTorch weight file that loads without running pickled code"):
        load_state_file(str(tmp_path / "x.h5"))
    (tmp_path / "y.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is not a readable .safetensors file"):
        load_state_file(str(tmp_path / "y.safetensors"))
    import argparse

    torch.save({"state_dict": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "timm.pth.tar")
    assert load_state_file(str(tmp_path / "timm.pth.tar"))["w"].sum() == 2  # timm's training checkpoints
