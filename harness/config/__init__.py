"""Stage 1: run configs and targets files, validated against the registries."""
