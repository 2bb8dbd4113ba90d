"""Tests of the mongodb protocol package."""
