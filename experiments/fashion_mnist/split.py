"""Fashion-MNIST with a held-out validation split, in the layout timm's train.py reads.

    python experiments/fashion_mnist/split.py DEST [--source /usr/share/datasets/fashion-mnist]

timm's `torch/fashion_mnist` dataset has a train and a test split only, and train.py evaluates every
epoch (and picks `model_best`) on what it is given as the evaluation split. So the 60,000 training
images are split once, by a fixed seed, into 55,000 for training and 5,000 for validation, and written
as two torchvision folders:

    DEST/trainval/FashionMNIST/raw/train-*   the 55,000 training images   (train.py --data-dir DEST/trainval)
    DEST/trainval/FashionMNIST/raw/t10k-*    the 5,000 validation images  (train.py evaluates on these)
    DEST/test/FashionMNIST/raw/*             the original files: t10k-* is the 10,000-image test split,
                                             used once per final checkpoint (validate.py --split test)

The validation indices (into the original training set, 0-based) are in split.json beside this file;
the script checks that it reproduces them and that the source files are the ones recorded there.
"""
import argparse
import gzip
import hashlib
import json
import random
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORD = HERE / 'split.json'
SEED, NUM_VALIDATION = 0, 5000
FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')


def validation_indices() -> list:
    return sorted(random.Random(SEED).sample(range(60000), NUM_VALIDATION))


def read_idx(data: bytes):
    """(header, item size, items) of an IDX file: images are 28x28 bytes, labels one byte."""
    dims = data[3]
    shape = struct.unpack(f'>{dims}I', data[4:4 + 4 * dims])
    size = 1
    for d in shape[1:]:
        size *= d
    body = data[4 + 4 * dims:]
    return data[:4], shape, [body[i * size:(i + 1) * size] for i in range(shape[0])]


def write_idx(path: Path, magic: bytes, shape, items):
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_bytes(magic + struct.pack(f'>{len(shape)}I', len(items), *shape[1:]) + b''.join(items))
    tmp.replace(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('dest', type=Path)
    parser.add_argument('--source', type=Path, default=Path('/usr/share/datasets/fashion-mnist'),
                        help="folder of the four *-ubyte.gz files (Debian's dataset-fashion-mnist)")
    args = parser.parse_args(argv)
    raw = {}
    for name in FILES:
        path = args.source / f'{name}.gz'
        if not path.is_file():
            print(f'error: {path} not found: install Debian\'s dataset-fashion-mnist or pass --source', file=sys.stderr)
            return 1
        raw[name] = gzip.decompress(path.read_bytes())
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in raw.items()}
    indices = validation_indices()
    record = json.loads(RECORD.read_text())
    if record['validation_indices'] != indices or record['source_sha256'] != digests:
        print(f'error: the source files or the seeded split differ from {RECORD.name}', file=sys.stderr)
        return 1

    test_dir = args.dest / 'test' / 'FashionMNIST' / 'raw'
    split_dir = args.dest / 'trainval' / 'FashionMNIST' / 'raw'
    for folder in (test_dir, split_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for name, data in raw.items():
        tmp = test_dir / (name + '.tmp')
        tmp.write_bytes(data)
        tmp.replace(test_dir / name)
    held_out = set(indices)
    for kind in ('images-idx3', 'labels-idx1'):
        magic, shape, items = read_idx(raw[f'train-{kind}-ubyte'])
        write_idx(split_dir / f'train-{kind}-ubyte', magic, shape, [x for i, x in enumerate(items) if i not in held_out])
        write_idx(split_dir / f't10k-{kind}-ubyte', magic, shape, [items[i] for i in indices])
    print(f'{args.dest}/trainval: {60000 - len(indices)} training + {len(indices)} validation images; '
          f'{args.dest}/test: the original files (10,000 test images)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
