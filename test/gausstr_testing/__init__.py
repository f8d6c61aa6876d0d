"""Test-only helpers of the gausstr_ros test suite (not installed with the packages).

pytest puts ``test/`` on ``sys.path`` (``pythonpath`` in pyproject.toml), so tests and benchmarks import
these as ``gausstr_testing.<module>``; the test folder itself is not a package (it would shadow the
standard library's ``test``).
"""
