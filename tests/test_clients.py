"""The software timm users load models with, run for real on our models and folders: transformers
(AutoModel, TimmWrapper, the image-classification pipeline), torchvision's FX feature extraction, timm's
own FX feature extractor, segmentation-models-pytorch, OpenVINO (from PyTorch and from our ONNX files),
torch.jit.trace, and the Hub metadata of our cards."""
import json

import pytest
import timm
import torch

import horesnet_timm  # noqa: F401
from horesnet_timm.cli import main
from horesnet_timm.models.cifar import WEIGHTS

from conftest import grey_batch, load_subset, randomised, train_py_checkpoint

transformers = pytest.importorskip('transformers')
SHIPPED = sorted(p.parent for p in WEIGHTS.glob('*/config.json'))
LABELS = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']


def close(a, b, tol=1e-5):
    """Equal up to float rounding at the tensors' scale (traced and eager graphs sum in other orders)."""
    return a.shape == b.shape and (a - b).abs().max().item() <= tol * max(1.0, a.abs().max().item())


def check_transformers_loads(folder, images, labels):
    """AutoModel and the pipeline load `folder` unchanged, with its class names, and agree with timm."""
    from PIL import Image
    from transformers import AutoModelForImageClassification, TimmWrapperModel, pipeline
    reference = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    model = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    assert [model.config.id2label[i] for i in range(len(labels))] == labels
    x = grey_batch(images, reference)
    with torch.no_grad():
        want = reference(x)
        assert torch.allclose(model(pixel_values=x).logits, want, atol=1e-5)
        features = TimmWrapperModel.from_pretrained(str(folder)).eval()(pixel_values=x).pooler_output
        assert torch.allclose(features, reference.forward_head(reference.forward_features(x), pre_logits=True),
                              atol=1e-5)
    classify = pipeline('image-classification', model=str(folder))
    got = [classify(Image.fromarray(image))[0]['label'] for image in images]  # grey PIL images, converted to RGB
    assert got == [labels[i] for i in want.argmax(1).tolist()]


@pytest.mark.parametrize('folder', SHIPPED, ids=lambda p: p.name)
def test_transformers_loads_every_shipped_folder(folder):
    images, _ = load_subset()
    check_transformers_loads(folder, images[:24], LABELS)


def test_transformers_loads_a_freshly_staged_grey_checkpoint(tmp_path, capsys):
    """A train.py checkpoint of a 1-channel Fashion-MNIST model, staged by `hub push`: published for RGB
    images, with the dataset's class names at config.json's top level, where transformers reads them."""
    model = randomised(timm.create_model('horesnet10_midpoint', in_chans=1, num_classes=10))
    checkpoint = train_py_checkpoint(tmp_path / 'ckpt.pth.tar', model, 'horesnet10_midpoint', dataset='torch/fashion_mnist',
                                     input_size=[1, 28, 28], mean=[0.286], std=[0.353], num_classes=10)
    folder = tmp_path / 'staged'
    assert main(['hub', 'push', checkpoint, '--repo-id', 'org/m', '--dry-run', '--output-dir', str(folder)]) == 0
    assert 'published for RGB images' in capsys.readouterr().out
    config = json.loads((folder / 'config.json').read_text())
    assert config['label_names'] == LABELS and 'num_classes' not in config['model_args']
    assert config['model_args']['in_chans'] == 3 and config['pretrained_cfg']['mean'] == [0.286] * 3
    images, _ = load_subset()
    check_transformers_loads(folder, images[:16], LABELS)
    # the RGB weights compute what the grey checkpoint computes on grey images
    rgb = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    with torch.no_grad():
        x = grey_batch(images[:64], rgb)
        assert torch.allclose(rgb(x), model.eval()(x[:, :1]), atol=1e-5)


def test_keep_grey_publishes_one_channel(tmp_path):
    model = randomised(timm.create_model('horesnet10_euler', in_chans=1, num_classes=10))
    checkpoint = train_py_checkpoint(tmp_path / 'ckpt.pth.tar', model, 'horesnet10_euler', dataset='torch/fashion_mnist',
                                     input_size=[1, 28, 28], mean=[0.286], std=[0.353], num_classes=10)
    folder = tmp_path / 'staged'
    assert main(['hub', 'push', checkpoint, '--repo-id', 'org/m', '--dry-run', '--keep-grey',
                 '--output-dir', str(folder)]) == 0
    assert timm.create_model(f'local-dir:{folder}', pretrained=True).in_chans == 1


@pytest.mark.parametrize('name, size', [('horesnet10_rk4', 32), ('horesnet32i_rk4', 64), ('horesnet58_lm', 32)])
def test_torchvision_feature_extraction(name, size):
    """torchvision's tracer knows none of timm's no-trace lists: the model must trace as it is."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    model = randomised(timm.create_model(name))
    _, nodes = get_graph_node_names(model)
    assert nodes[-1] == 'fc'
    features = nodes[nodes.index('global_pool.pool') - 1]  # the trunk's last node
    extractor = create_feature_extractor(model, {'stem.act': 'stem', features: 'features', 'fc': 'logits'})
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = extractor(x)
        assert close(out['logits'], model(x)) and close(out['features'], model.forward_features(x))
        assert close(out['stem'], model.stem(x))
    with pytest.raises(ValueError, match='the input has 1'):  # the input check still runs in the traced graph
        extractor(torch.randn(2, 1, size, size))


@pytest.mark.parametrize('name, kwargs', [('horesnet10_euler', {}), ('horesnet18_rk4', {'out_indices': (4, 8)}),
                                          ('horesnet58_lm', {}), ('horesnet32i_midpoint', {})])
def test_fx_feature_taps_equal_the_default_taps(name, kwargs):
    torch.manual_seed(0)
    default = timm.create_model(name, features_only=True, **kwargs).eval()
    torch.manual_seed(0)
    fx = timm.create_model(name, features_only=True, feature_cls='fx', **kwargs).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(default(x), fx(x), strict=True):
            assert close(a, b)


def test_fx_feature_taps_inside_a_block_are_refused():
    # the default taps of horesnet10_rk4 are inputs of sub-networks inside its one RK4 block
    with pytest.raises(ValueError, match="feature_cls='fx' cannot return the taps inside"):
        timm.create_model('horesnet10_rk4', features_only=True, feature_cls='fx')


@pytest.mark.parametrize('folder', SHIPPED, ids=lambda p: p.name)
def test_shipped_card_metadata(folder):
    from huggingface_hub import ModelCard
    card = ModelCard((folder / 'README.md').read_text())
    data = card.data.to_dict()
    record = json.loads((folder / 'eval.json').read_text())
    assert data['pipeline_tag'] == 'image-classification' and data['library_name'] == 'timm'
    assert {'timm', 'transformers'} <= set(data['tags']) and data['datasets'] == [record['dataset']]
    metrics = {m['name']: m['value'] for m in data['model-index'][0]['results'][0]['metrics']}
    assert metrics == {'Top-1 accuracy': record['top1'], 'Top-5 accuracy': record['top5']}


def test_card_of_a_pretrained_tag_keeps_its_record(capsys):
    name = SHIPPED[0].name
    assert main(['card', name, '--pretrained']) == 0
    text = capsys.readouterr().out
    record = json.loads((SHIPPED[0] / 'eval.json').read_text())
    assert f"| {record['top1']} |" in text and record['dataset'] in text and 'model-index' in text


@pytest.mark.parametrize('output_stride, reductions', [(8, [2, 4, 8, 8, 8]), (16, [2, 4, 8, 16, 16])])
def test_output_stride_dilates_the_last_stages(output_stride, reductions):
    base = randomised(timm.create_model('horesnet50i_rk4', features_only=True))
    dense = timm.create_model('horesnet50i_rk4', features_only=True, output_stride=output_stride).eval()
    dense.load_state_dict(base.state_dict())  # the same weights
    assert dense.feature_info.reduction() == reductions
    with torch.no_grad():
        assert [f.shape[-1] for f in dense(torch.randn(1, 3, 64, 64))] == [64 // r for r in reductions]
    with pytest.raises(ValueError, match='this one reduces it 1 times, so it has no stride to trade for dilation'):
        timm.create_model('horesnet10_rk4', output_stride=16)
    with pytest.raises(ValueError, match='reduces it 4 times'):  # the ImageNet stem, one stage: nothing to dilate
        timm.create_model('horesnet10_rk4', stem='imagenet', output_stride=8)


@pytest.mark.parametrize('architecture', ['DeepLabV3Plus', 'DeepLabV3', 'Unet', 'FPN'])
def test_segmentation_models_pytorch(architecture):
    smp = pytest.importorskip('segmentation_models_pytorch')
    model = getattr(smp, architecture)('tu-horesnet32i_midpoint', encoder_weights=None, classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize('name', ['horesnet10_rk4', 'horesnet30_rk8_adaptive', 'horesnet58_lm', 'horesnet32i_rk4'])
def test_openvino_from_pytorch_and_from_our_onnx(tmp_path, name):
    """OpenVINO's convert_model traces with torch.jit.trace in grad mode, whose check re-traces under no_grad:
    a block must not take another path under no_grad while traced (it did, and the conversion failed)."""
    ov = pytest.importorskip('openvino')
    from horesnet_timm.onnx_export import export_onnx
    model = randomised(timm.create_model(name))
    x = torch.randn(2, *model.pretrained_cfg['input_size'])
    with torch.no_grad():
        expected = model(x).numpy()
    export_onnx(model, str(tmp_path / 'm.onnx'), check=False)
    core = ov.Core()
    for converted in (ov.convert_model(model, example_input=x), core.read_model(str(tmp_path / 'm.onnx'))):
        got = core.compile_model(converted, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})(x.numpy())[0]
        assert abs(got - expected).max() <= 1e-4 * max(1., abs(expected).max())


def test_jit_trace_in_grad_mode_passes_its_own_check():
    model = randomised(timm.create_model('horesnet10_rk4'))
    x = torch.randn(2, 3, 32, 32)
    traced = torch.jit.trace(model, x)  # check_trace re-traces under no_grad and compares the graphs
    with torch.no_grad():
        assert torch.allclose(traced(x), model(x), atol=1e-6)


def gill4_checkpoint(tmp_path):
    """A train.py checkpoint of horesnet10_rk4 trained with --model-kwargs scheme=gill4: RK4's keys and shapes."""
    model = randomised(timm.create_model('horesnet10_rk4', scheme='gill4', in_chans=1, num_classes=10))
    return train_py_checkpoint(tmp_path / 'gill4.pth.tar', model, 'horesnet10_rk4', model_kwargs={'scheme': 'gill4'},
                               dataset='torch/fashion_mnist', input_size=[1, 28, 28], num_classes=10)


def test_timm_load_checkpoint_refuses_another_wiring(tmp_path):
    from timm.models import load_checkpoint
    checkpoint = gill4_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="trained in a 'gill4' block, this model's is 'rk4'"):
        load_checkpoint(timm.create_model('horesnet10_rk4', in_chans=1, num_classes=10), checkpoint)
    load_checkpoint(timm.create_model('horesnet10_rk4', scheme='gill4', in_chans=1, num_classes=10), checkpoint)


def test_weights_saved_without_a_wiring_record_still_load():
    model = randomised(timm.create_model('horesnet10_midpoint'))
    legacy = {k: v for k, v in model.state_dict().items() if not k.endswith('_extra_state')}
    assert len(legacy) < len(model.state_dict())
    fresh = timm.create_model('horesnet10_midpoint').eval()
    fresh.load_state_dict(legacy)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_a_record_from_before_a_field_was_recorded_is_compared_on_the_rest():
    import json
    model = randomised(timm.create_model('horesnet10_midpoint'))
    state = model.state_dict()
    for key in [k for k in state if k.endswith('blocks.0._extra_state')]:
        record = json.loads(bytes(state[key].tolist()).decode())
        del record['subnet']  # as the records written before it
        state[key] = torch.tensor(list(json.dumps(record).encode()), dtype=torch.uint8)
    timm.create_model('horesnet10_midpoint').load_state_dict(state)
    with pytest.raises(ValueError, match="trained in a 'midpoint' block, this model's is 'heun'"):
        timm.create_model('horesnet10_midpoint', scheme='heun').load_state_dict(state)


@pytest.mark.parametrize('override', [{'scheme': 'gill4'}, {'scheme': 'rk38'}, {'block_act': False},
                                      {'subnet': 'basic'}, {'learn_step_size': True}])
def test_published_weights_refuse_another_wiring(override):
    name = 'horesnet58w16_rk4.fmnist'
    with pytest.raises(ValueError, match='wired otherwise'):
        timm.create_model(name, pretrained=True, **override)
    timm.create_model(name, pretrained=True, drop_path_rate=0.1)  # a training-only setting may change


def test_published_classifier_refuses_another_pooling():
    name = 'horesnet58w16_rk4.fmnist'
    with pytest.raises(ValueError, match="classifier reads 'avg'-pooled features and this model pools by 'max'"):
        timm.create_model(name, pretrained=True, global_pool='max')
    # without the trained classifier, pooling is the user's choice
    features = timm.create_model(name, pretrained=True, global_pool='max', num_classes=0)
    assert features(torch.randn(1, 3, 28, 28)).shape == (1, 16)
    timm.create_model(name, pretrained=True, global_pool='max', num_classes=3)
    timm.create_model(name, pretrained=True, global_pool='', num_classes=0)


def test_plain_validate_py_refuses_another_wiring(tmp_path):
    import os
    import subprocess
    import sys
    if not os.environ.get('TIMM_TRAIN_PY'):
        pytest.skip("set TIMM_TRAIN_PY to timm's train.py (validate.py beside it); .ci/run does")
    validate = os.path.join(os.path.dirname(os.environ['TIMM_TRAIN_PY']), 'validate.py')
    checkpoint = gill4_checkpoint(tmp_path)
    run = subprocess.run(
        [sys.executable, '-c', 'import horesnet_timm, runpy, sys; sys.argv = sys.argv[1:]; '
                               'runpy.run_path(sys.argv[0], run_name="__main__")',
         validate, '--model', 'horesnet10_rk4', '--checkpoint', checkpoint, '--in-chans', '1', '--num-classes', '10',
         '--dataset', 'torch/fashion_mnist', '--data-dir', str(tmp_path), '--device', 'cpu', '--workers', '0'],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert run.returncode != 0 and "trained in a 'gill4' block, this model's is 'rk4'" in run.stderr
