"""Tests of the thrift protocol package."""
