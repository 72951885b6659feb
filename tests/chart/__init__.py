"""Chart, image and Kubernetes workflow tests (a package, so its modules and conftest never clash
with the top-level tests' `conftest`)."""
