"""Tests of the amqp protocol package."""
