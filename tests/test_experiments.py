"""The evidence tooling in experiments/fashion_mnist: the held-out split, resumed train.py outputs, epoch times."""
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / 'experiments' / 'fashion_mnist'
sys.path.insert(0, str(HERE))
import results  # noqa: E402
import run_queue  # noqa: E402
import split  # noqa: E402

SOURCE = Path('/usr/share/datasets/fashion-mnist')


@pytest.mark.skipif(not (SOURCE / 'train-images-idx3-ubyte.gz').is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_split_holds_out_the_recorded_images(tmp_path):
    import gzip
    assert split.main([str(tmp_path)]) == 0
    _, _, images = split.read_idx(gzip.decompress((SOURCE / 'train-images-idx3-ubyte.gz').read_bytes()))
    _, _, labels = split.read_idx(gzip.decompress((SOURCE / 'train-labels-idx1-ubyte.gz').read_bytes()))
    raw = tmp_path / 'trainval' / 'FashionMNIST' / 'raw'
    _, shape, train = split.read_idx((raw / 'train-images-idx3-ubyte').read_bytes())
    _, _, val = split.read_idx((raw / 't10k-images-idx3-ubyte').read_bytes())
    _, _, val_labels = split.read_idx((raw / 't10k-labels-idx1-ubyte').read_bytes())
    indices = split.validation_indices()
    assert shape[1:] == (28, 28) and (len(train), len(val)) == (55000, 5000)
    assert val == [images[i] for i in indices] and val_labels == [labels[i] for i in indices]
    held_out = set(indices)
    assert train[:100] == [x for i, x in enumerate(images) if i not in held_out][:100]
    # torchvision reads the folders as the layout train.py uses
    from torchvision.datasets import FashionMNIST
    assert len(FashionMNIST(str(tmp_path / 'trainval'), train=False)) == 5000
    assert len(FashionMNIST(str(tmp_path / 'test'), train=False)) == 10000


def test_split_refuses_a_missing_source(tmp_path, capsys):
    assert split.main([str(tmp_path / 'out'), '--source', str(tmp_path)]) == 1
    assert 'dataset-fashion-mnist' in capsys.readouterr().err and not (tmp_path / 'out').exists()


def test_resumed_summary_keeps_the_last_row_of_each_epoch(tmp_path):
    header = 'epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\n'
    (tmp_path / 'summary.csv').write_text(
        header + '0,2.0,1.0,80.0,99,0.01\n1,1.0,0.5,85.0,99,0.1\n'
        + header + '1,1.1,0.6,84.0,99,0.1\n2,0.9,0.4,84.0,99,0.05\n')  # resumed: epoch 1 redone
    rows = run_queue.summary_rows(tmp_path / 'summary.csv')
    assert [r['epoch'] for r in rows] == ['0', '1', '2'] and rows[1]['eval_top1'] == '84.0'
    assert run_queue.best_epoch(rows) == '1'  # the first of the tied best, as train.py's own saver


def test_epoch_seconds_skip_an_interrupted_epoch(tmp_path):
    log = tmp_path / 'train.log'
    log.write_text('\n'.join([
        '100.0 $ python train.py',
        '101.0 Train: 0 [   0/429 (  0%)]  Loss: 2.3',
        '150.0 Train: 0 [ 428/429 (100%)]  Loss: 1.0',
        '155.0 Test: [  39/39]  Acc@1: 80.0',
        '156.0 Train: 1 [   0/429 (  0%)]  Loss: 1.0',  # stopped here
        '300.0 $ python train.py --resume last.pth.tar',
        '302.0 Train: 1 [   0/429 (  0%)]  Loss: 1.0',
        '362.0 Test: [  39/39]  Acc@1: 85.0',
    ]) + '\n')
    assert results.epoch_seconds(log) == {0: 54.0, 1: 60.0}
