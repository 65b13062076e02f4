"""Stage 2: data, models, fine-tuning, compression recipes, exports and parity: the cells."""
