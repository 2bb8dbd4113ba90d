"""Helpers shared by the SQL protocols (MySQL, PostgreSQL): statement text, row rendering, statement caches."""
