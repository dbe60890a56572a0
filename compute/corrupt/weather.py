"""Weather corruptions: snow, frost, fog, and the extra spatter."""

from __future__ import annotations
