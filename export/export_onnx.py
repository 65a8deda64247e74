#!/usr/bin/env python3
"""Export a model to ONNX: the same as `horesnet export` (see horesnet_timm/onnx_export.py).

    python export/export_onnx.py horesnet58_rk4 --checkpoint model.safetensors -o horesnet58_rk4.onnx
"""
import argparse
import sys

from horesnet_timm import onnx_export

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=onnx_export.__doc__.splitlines()[0])
    onnx_export.add_arguments(parser)
    sys.exit(onnx_export.run(parser.parse_args()))
