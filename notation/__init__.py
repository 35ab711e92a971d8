"""Index notation: parse the report's equations and lower them to einsum over views."""
