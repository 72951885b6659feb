"""Tests against a real Kubernetes control plane run as local processes (marker apiserver)."""
