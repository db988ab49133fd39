"""Journeys and messaging: definitions, the enrollment engine, the outbox. Framework-free."""
