"""Test doubles that speak the providers' HTTP APIs, and their pytest fixtures."""
