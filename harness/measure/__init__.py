"""Stage 3: jobs on targets, raw results folded into measurements, statistics."""
