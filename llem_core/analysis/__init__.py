"""Results and analysis: the result schema and store, statistics, aggregates, reports,
histories and their change points."""
