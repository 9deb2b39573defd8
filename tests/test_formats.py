import pytest
import torch

import lightnets
from lightnets.formats import CheckpointError, Preprocessing, load_model, save_checkpoint

PRE = Preprocessing("imagenet", 64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), resize=73)


def _checkpoint(tmp_path, name, model_entry=None, **options):
    model = lightnets.create_model(name, **options)
    config = {
        "model": {"name": name, "options": options} if model_entry is None else model_entry,
        "classes": ["cat", "dog", "fox"],
        "preprocessing": PRE.to_dict(),
    }
    path = str(tmp_path / "m.safetensors")
    save_checkpoint(path, model.state_dict(), config=config, progress={}, keep_previous=False)
    return path, model


def test_load_model_rebuilds_every_stored_option(tmp_path):
    path, original = _checkpoint(tmp_path, "shufflenet_v1", groups=8, width_mult=0.5, num_classes=3)
    loaded = load_model(path, "shufflenet_v1")
    assert loaded.name == "shufflenet_v1" and loaded.options == {"groups": 8, "width_mult": 0.5, "num_classes": 3}
    assert loaded.class_names == ["cat", "dog", "fox"] and loaded.preprocessing == PRE and not loaded.model.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), original.eval()(x))
    assert load_model(path).name == "shufflenet_v1"  # no expectation: whatever it holds


def test_load_model_refuses_another_name_or_other_options(tmp_path):
    path, _ = _checkpoint(tmp_path, "shufflenet_v1", groups=8, width_mult=0.5, num_classes=3)
    with pytest.raises(ValueError, match="holds 'shufflenet_v1', not 'mobilenet_v2'"):
        load_model(path, "mobilenet_v2")
    with pytest.raises(ValueError, match="holds shufflenet_v1 built with groups=8, not 3"):
        load_model(path, options={"groups": 3})
    assert load_model(path, options={"groups": 8, "width_mult": 0.5}).options["groups"] == 8


def test_load_model_without_a_stored_name_needs_one(tmp_path):
    path, _ = _checkpoint(tmp_path, "mobilenet_v3_small_050", model_entry={}, num_classes=3)
    with pytest.raises(ValueError, match="stores no model name"):
        load_model(path)
    assert load_model(path, "mobilenet_v3_small_050").options == {"num_classes": 3}  # sized by the stored classes


def test_load_model_builds_a_network_stored_as_its_spec(tmp_path):
    from lightnets.models import inherit_weights, resize_group

    parent = lightnets.create_model("mobilenet_v3_small_050", num_classes=3).eval()
    child = inherit_weights(parent, resize_group(parent.spec, "blocks.2.1.mid", 40)).eval()
    path = str(tmp_path / "pruned.safetensors")
    config = {"model": {"spec": str(child.spec)}, "classes": ["cat", "dog", "fox"], "preprocessing": PRE.to_dict()}
    save_checkpoint(path, child.state_dict(), config=config, progress={}, keep_previous=False)
    loaded = load_model(path)
    assert loaded.name == "spec" and loaded.model.spec == child.spec
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), child(x))
    with pytest.raises(ValueError, match="which .mobilenet_v3_small_050. with .* does not build"):
        load_model(path, "mobilenet_v3_small_050")


def test_load_model_refuses_bad_specs_and_weights_that_do_not_fit(tmp_path):
    path, _ = _checkpoint(tmp_path, "mobilenet_v3_small_050", model_entry={"spec": "ir_r1_k3_s2_e1_c16"}, num_classes=3)
    with pytest.raises(CheckpointError, match="stored network spec does not build"):
        load_model(path)
    entry = {
        "name": "mobilenet_v3_small_050",
        "options": {"num_classes": 3},
        "spec": str(lightnets.create_model("mobilenet_v3_small_075", num_classes=3).spec),
    }
    path, _ = _checkpoint(tmp_path, "mobilenet_v3_small_050", model_entry=entry, num_classes=3)
    with pytest.raises(CheckpointError, match="builds another network than the one stored"):
        load_model(path)
    wrong = {"name": "mobilenet_v3_small_075", "options": {"num_classes": 3}}
    path, _ = _checkpoint(tmp_path, "mobilenet_v3_small_050", model_entry=wrong, num_classes=3)
    with pytest.raises(CheckpointError, match="its weights do not fit mobilenet_v3_small_075"):
        load_model(path)


def test_export_command_rebuilds_the_stored_network_and_refuses_other_options(tmp_path, capsys):
    """The export path used to drop the stored width and groups; it now goes through load_model."""
    from lightnets.cli import main

    path, original = _checkpoint(tmp_path, "shufflenet_v1", groups=8, width_mult=0.5, num_classes=3)
    out = tmp_path / "m.pt2"
    assert main(["export", "shufflenet_v1", "--checkpoint", path, "--format", "pt2", "-o", str(out)]) == 0
    x = torch.randn(2, 3, 64, 64)  # the stored resolution
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(str(out)).module()(x), original.eval()(x), atol=1e-4, rtol=1e-4)
    capsys.readouterr()
    fresh = tmp_path / "refused.onnx"  # not 'out', which now exists and would be refused without --force
    assert main(["export", "shufflenet_v1", "--checkpoint", path, "--groups", "3", "-o", str(fresh)]) == 2
    assert "built with groups=8, not 3" in capsys.readouterr().err
    assert main(["export", "mobilenet_v2", "--checkpoint", path, "-o", str(fresh)]) == 2
    assert "holds 'shufflenet_v1', not 'mobilenet_v2'" in capsys.readouterr().err


def test_a_checkpoint_with_only_a_spec_loads_under_the_name_that_builds_it(tmp_path):
    """fit() without a model_config stores the spec alone; the registered name that builds it still loads it."""
    model = lightnets.create_model("mobilenet_v3_small_050", num_classes=3)
    config = {"model": {"spec": str(model.spec)}, "classes": ["cat", "dog", "fox"], "preprocessing": PRE.to_dict()}
    path = str(tmp_path / "m.safetensors")
    save_checkpoint(path, model.state_dict(), config=config, progress={}, keep_previous=False)
    assert load_model(path, "mobilenet_v3_small_050").name == "mobilenet_v3_small_050"
    assert load_model(path).name == "spec"
    with pytest.raises(ValueError, match="which 'mobilenet_v3_small_075'.*does not build"):
        load_model(path, "mobilenet_v3_small_075")
    two = {**config, "classes": ["cat", "dog"]}
    save_checkpoint(path, model.state_dict(), config=two, progress={}, keep_previous=False)
    with pytest.raises(CheckpointError, match="3 classes, its class names 2"):
        load_model(path)
