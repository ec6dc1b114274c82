"""`make bench`: figures for the limits issues set; written to bench/results.json."""
