"""Fixtures of the data tests: fabricated files in each real format (see fabricate.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # fabricate.py, shared by the data tests
