#!/usr/bin/env python3
"""Export a model to ONNX: `horesnet export` as a script (see horesnet_timm/onnx_export.py), with the
same flags, messages and exit statuses.

    python export/export_onnx.py horesnet58_rk4 --checkpoint model.safetensors -o horesnet58_rk4.onnx
"""
import sys

from horesnet_timm.cli import main

if __name__ == '__main__':
    sys.exit(main(['export', *sys.argv[1:]]))
