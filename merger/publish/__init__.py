"""Submission prep: model cards, licenses, upload-ready exports, preflight checks."""
