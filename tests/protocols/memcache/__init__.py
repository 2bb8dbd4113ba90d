"""Tests of the memcache protocol package."""
