"""``python -m replay --redrive``: dead-lettered records put back through the ordering guard."""
