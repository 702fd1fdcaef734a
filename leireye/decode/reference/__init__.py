"""The reference decoder: dpkt's object tree per frame, slow and plain, kept to check the fast
decoder against (`compare`) in tests, fuzzing and benchmarks."""
