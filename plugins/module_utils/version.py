"""The engine's version; galaxy.yml carries the same number (a test checks)."""

VERSION = "0.1.0"
