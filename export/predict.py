#!/usr/bin/env python3
"""Classify images with an exported ONNX file, where only onnxruntime, numpy and pillow are installed.

    python export/predict.py horesnet58_rk4.onnx cat.png dog.png --topk 5 [--json]

Loads horesnet_timm/predict.py by file path rather than importing the package, which needs torch and
timm installed. Copy this file and horesnet_timm/predict.py together to deploy.
Flags, output and exit status are those of `horesnet predict`: 0 success, 1 a failure (a bad
image or ONNX file, NaN or infinite outputs), 2 a usage error, 141 when the output's reader
went away (`| head`), without a traceback.
"""
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# beside this script (a deployment copy), else the package in this repository
_CANDIDATES = [os.path.join(_HERE, 'horesnet_predict.py'), os.path.join(_HERE, '..', 'horesnet_timm', 'predict.py')]


def load_runner():
    path = next((p for p in _CANDIDATES if os.path.isfile(p)), None)
    if path is None:
        raise SystemExit('cannot find the runner: put horesnet_timm/predict.py beside this script as horesnet_predict.py')
    spec = importlib.util.spec_from_file_location('horesnet_predict', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == '__main__':
    sys.exit(load_runner().main())
