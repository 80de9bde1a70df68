"""hostcore: one secure, fast, pluggable REST API for a small Linux device."""

__version__ = "0.1.0"
