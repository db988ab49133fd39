"""Marketer accounts and roles, API keys and their scopes."""
