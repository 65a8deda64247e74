"""The `horesnet` commands, one module per command, on the floor above the library: each holds a command's
argparse code and what it shows of the library's results. `horesnet predict` is the exception: its command
lives in predict.py, the torch-free runner that `export/predict.py` loads as one file where only
onnxruntime, numpy and pillow are installed."""
