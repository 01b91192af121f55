"""`make bench`: this service vs `mlflow models serve` vs a naive Flask + Keras server."""
