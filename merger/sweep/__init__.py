"""Sweeps: recipes checked across stages, candidates run through the stages, journaled, ranked, kept."""
