//! Black-box tests against real `keel` processes live in `tests/tests/`.
