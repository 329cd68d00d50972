"""Tables from grid outcomes and MLflow runs."""
