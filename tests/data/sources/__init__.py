"""Tests of the hub/file dataset options (alignctl.data.sources)."""
