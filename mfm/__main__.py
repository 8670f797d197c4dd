"""``python -m mfm`` (also what ``torchrun -m mfm run ...`` starts)."""

from mfm.cli import main

main()
