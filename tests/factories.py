"""Test data: chips reach their state by walking real transitions (chips.demo)."""

from chips.demo import PATHS, chip_in_state, chip_walk

__all__ = ["PATHS", "chip_in_state", "chip_walk"]
