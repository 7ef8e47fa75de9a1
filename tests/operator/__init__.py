"""Tests of the MusicVideo operator (unit tests without a cluster; e2e with the cluster fixture)."""
