"""python -m gpt train | sample | plot"""
import sys

from .cli import main

sys.exit(main())
