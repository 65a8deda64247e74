"""The `horesnet` commands, one module per command, above the library: each holds a command's argparse
code and what it does with the library's results (the remaining commands still live beside their library
modules)."""
