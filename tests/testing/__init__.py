"""Tests of the test kit merchants use (worker/testing/)."""
