#!/usr/bin/python3
"""The Keras MNIST MLP in PyTorch, the peer of examples/mnist_mlp.c.

Flatten(28x28) -> Dense(128, relu) -> Dropout(0.2) -> Dense(10), Adam(1e-3),
softmax cross-entropy on the logits, mini-batches reshuffled every epoch.
Reads an MNIST-format directory (the four IDX files, gzip or not).
Prints per-epoch progress on stderr and, as the last line of stdout, the same
line as build/mnist_mlp:
    test_accuracy <f> test_loss <f> train_seconds <f>
train_seconds covers the training epochs only, not loading or evaluation.

Usage: /usr/bin/python3 bench/peers/torch_mlp.py --data DIR --batch 32 --epochs 5 --seed 0 [--pixels float|u8]
Pin it for timings: OMP_NUM_THREADS=1 taskset -c 0 ...
"""
import argparse
import gzip
import os
import struct
import sys
import time

import numpy as np
import torch

# IDX type codes (third byte of the magic number) that MNIST-format files use.
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype('>i2'),
              0x0C: np.dtype('>i4'), 0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8')}


def read_idx(path):
    """An IDX file as a numpy array: 2 zero bytes, type code, rank, then
    rank big-endian uint32 dimensions and the data, row-major."""
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        head = f.read(4)
        if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES:
            raise ValueError(f'{path}: not an IDX file (magic {head.hex()})')
        rank = head[3]
        dims = struct.unpack(f'>{rank}I', f.read(4 * rank))
        data = np.frombuffer(f.read(), dtype=IDX_DTYPES[head[2]])
    count = int(np.prod(dims))
    if data.size != count:
        raise ValueError(f'{path}: {data.size} values, header says {dims}')
    return data.reshape(dims)


def find_idx(directory, stem):
    for name in (stem, stem + '.gz'):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f'{directory}: no {stem} or {stem}.gz')


def load_split(directory, prefix, pixels='float'):
    images = read_idx(find_idx(directory, f'{prefix}-images-idx3-ubyte'))
    labels = read_idx(find_idx(directory, f'{prefix}-labels-idx1-ubyte'))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f'{directory}: {prefix}: {images.shape[0]} images, {labels.shape[0]} labels')
    if pixels == 'u8':  # kept as bytes, scaled per batch (see as_float)
        x = torch.from_numpy(images.copy()).reshape(-1, 28, 28)
    else:
        x = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(-1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def keras_mlp():
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(784, 128),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 10),
    )


def as_float(x):
    """A batch of pixels as float32 in [0, 1], whichever way they are stored."""
    return x if x.dtype == torch.float32 else x.float().mul_(1.0 / 255.0)


def train(model, x, y, batch, epochs, generator):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(x.shape[0], generator=generator)
        total, seen = 0.0, 0
        for start in range(0, x.shape[0], batch):
            idx = order[start:start + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(as_float(x[idx])), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * idx.shape[0]
            seen += idx.shape[0]
        print(f'epoch {epoch + 1}/{epochs} loss {total / seen:.4f} '
              f'{time.perf_counter() - t0:.2f} s', file=sys.stderr)


def evaluate(model, x, y):
    model.eval()
    with torch.no_grad():
        logits = model(as_float(x))
        loss = torch.nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(1) == y).double().mean().item()
    return acc, loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default='/usr/share/datasets/fashion-mnist')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--epochs', type=int, default=5)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--pixels', choices=('float', 'u8'), default='float',
                    help='keep the training images as float32 (default: the fastest here) '
                         'or as bytes scaled per batch')
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    xtr, ytr = load_split(args.data, 'train', args.pixels)
    xte, yte = load_split(args.data, 't10k', args.pixels)
    model = keras_mlp()

    t0 = time.perf_counter()
    train(model, xtr, ytr, args.batch, args.epochs, generator)
    train_seconds = time.perf_counter() - t0

    acc, loss = evaluate(model, xte, yte)
    print(f'torch {torch.__version__} threads {torch.get_num_threads()} batch {args.batch} '
          f'epochs {args.epochs} seed {args.seed}')
    print(f'test_accuracy {acc:.4f} test_loss {loss:.4f} train_seconds {train_seconds:.3f}')


if __name__ == '__main__':
    main()
