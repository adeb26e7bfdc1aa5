"""signals_app business logic: plain functions with keyword-only arguments."""
