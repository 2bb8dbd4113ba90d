"""Tests of the cassandra protocol package."""
