"""Caption metrics as pure functions (BLEU, object F1, attention correctness) and scoring a test set."""
