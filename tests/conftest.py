# Shared pytest configuration.


def pytest_configure(config):
    # Slow tests (real stream servers, slow copies) still run in `make test`; `make test-fast`
    # deselects them with -m "not slow".
    config.addinivalue_line("markers", "slow: takes more than a few seconds (real servers, slow copies)")
