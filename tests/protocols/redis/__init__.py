"""Tests of the redis protocol package."""
