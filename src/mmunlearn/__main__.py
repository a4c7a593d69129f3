"""``python -m mmunlearn`` — what torchrun / the deepspeed launcher run on every rank."""

from mmunlearn.cli import main

main()
