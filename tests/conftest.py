"""Shared pytest options and fixtures."""


def pytest_addoption(parser):
    parser.addoption(
        "--fuzz-cases", type=int, default=None,
        help="run the seeded fuzzers with this many cases instead of their default")
